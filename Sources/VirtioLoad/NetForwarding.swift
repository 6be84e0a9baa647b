import CMallocCount
import Logging
import VirtioCore
import VirtioDrivers
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// testpmd's forwarding modes (`--forward-mode`), over one net device's queue pairs.
public enum NetForwardMode: String, Sendable, CaseIterable, Codable {
    /// Received frames go back out unchanged.
    case io
    /// Received frames go back out with destination and source MAC swapped.
    case macswap
    /// Only transmit: UDP frames of `--size` bytes, as fast as the ring takes them.
    case txonly
    /// Only receive (and count, and drop).
    case rxonly
    /// Answer ARP requests and ICMP echo requests for `--ip`; drop the rest.
    case icmpecho
}

/// How `NetForwarder` runs.
public struct NetForwardOptions: Sendable {
    public var mode = NetForwardMode.io
    /// txonly frame size, Ethernet header included, no FCS (testpmd --txpkts).
    public var frameSize = 64
    public var burst = 32
    /// Stop after this long (nil: until `shouldStop`).
    public var durationNanoseconds: UInt64?
    /// Stop once this many frames were received (rxonly, io, macswap, icmpecho) or sent (txonly).
    public var frameLimit: UInt64?
    /// icmpecho's address; txonly's source and destination addresses (testpmd --tx-ip).
    public var ip: UInt32 = 0xA9FE_0002
    public var txSourceIP: UInt32 = 0xA9FE_0001, txDestinationIP: UInt32 = 0xA9FE_0002
    /// txonly's destination MAC (testpmd --eth-peer); nil: broadcast.
    public var peerMAC: [UInt8]?
    /// Sleep on the receive queues' MSI-X vectors when idle instead of spinning.
    public var interrupts = false
    public var reportIntervalNanoseconds: UInt64 = 1_000_000_000
    /// io / macswap: send one burst of txonly frames per pair first, so two forwarders (or a loop)
    /// have something to pass back and forth (testpmd --tx-first).
    public var txFirst = false
    public init() {}
}

/// Totals of a forwarding run, per direction, over every pair.
public struct NetForwardTotals: Sendable, Codable, Equatable {
    public var rx = NetQueueStats()
    public var tx = NetQueueStats()
    /// icmpecho: ARP replies and echo replies sent.
    public var arpReplies: UInt64 = 0, echoReplies: UInt64 = 0
    /// Frames received that the mode did not answer or could not forward (not counted as rx drops).
    public var ignored: UInt64 = 0
    public var seconds: Double = 0
    /// Heap allocations by the forwarding thread from its first per-second report to the end of
    /// the loop (the reports and link polls themselves not counted), and the frames moved meanwhile.
    public var steadyAllocations: UInt64 = 0, steadyFrames: UInt64 = 0
    public init() {}
}

/// What the per-second report gets: totals so far and the time since the last report.
public typealias NetForwardReport = (_ totals: NetForwardTotals, _ intervalSeconds: Double) -> Void

/// The forwarding loop: one thread, round-robin over the pairs, one burst each per turn.
public enum NetForwarder {
    @inlinable
    public static func run<T: VirtioTransport>(_ net: NetDevice<T>, _ o: NetForwardOptions, capture: PacketCapture? = nil,
                                               captureSent: Bool = false, shouldStop: () -> Bool = { false },
                                               report: NetForwardReport = { _, _ in }) throws -> NetForwardTotals {
        let pairs = net.activePairs
        let bursts = UnsafeMutablePointer<NetRxBurst>.allocate(capacity: pairs)
        for p in 0..<pairs { (bursts + p).initialize(to: net.rx(p).pointee.makeBurst(capacity: o.burst)) }
        let picks = UnsafeMutableBufferPointer<Int>.allocate(capacity: o.burst)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: netMaxMergedBytes, alignment: 64)
        defer {
            bursts.deinitialize(count: pairs)
            bursts.deallocate()
            picks.deallocate()
            scratch.deallocate()
        }
        let ourMAC = net.mac.array, peer = o.peerMAC ?? MACAddress.broadcast.array
        // Every txonly frame is the same: built (IP checksum included) once and copied, as
        // testpmd's txonly copies its precomputed headers. Building each one cost 80% of a burst.
        let template = UnsafeMutableRawBufferPointer.allocate(byteCount: max(o.frameSize, 42), alignment: 64)
        defer { template.deallocate() }
        let templateLength = NetPackets.writeUDP(into: template, length: o.frameSize, destination: peer, source: ourMAC,
                                                 sourceIP: o.txSourceIP, destinationIP: o.txDestinationIP)
        var extra = NetForwardTotals()
        let start = monotonicNanoseconds()
        var lastReport = start, idleTurns = 0, turn = 0
        var allocationsFrom: UInt64?, allocationsOutside: UInt64 = 0, framesFrom: UInt64 = 0
        // Frames this loop received (or, in txonly, sent): the frame limit's count, kept here
        // rather than summed from the queues' totals each turn.
        var limitCount: UInt64 = 0
        if o.txFirst {
            for p in 0..<pairs {
                _ = try net.tx(p).pointee.transmit(count: min(o.burst, net.tx(p).pointee.room)) { _, b in
                    copyFrame(template, templateLength, to: b)
                }
            }
        }
        // txonly with a frame limit sends exactly that many: the last burst is cut to what is left.
        var txLeft = o.mode == .txonly ? o.frameLimit ?? UInt64.max : UInt64.max
        while !shouldStop() {
            var moved = 0
            for p in 0..<pairs {
                let tx = net.tx(p)
                if o.mode == .txonly {
                    // Only as many as fit: a full ring is not a drop in txonly, the next turn retries.
                    if tx.pointee.room < o.burst { try tx.pointee.reclaim() }
                    let count = Int(min(UInt64(min(o.burst, tx.pointee.room)), txLeft))
                    guard count > 0 else { continue }
                    let sent = try tx.pointee.transmit(count: count) { _, b in
                        let info = copyFrame(template, templateLength, to: b)
                        if captureSent, let capture { capture.write(b.baseAddress!, length: info.length) }
                        return info
                    }
                    moved &+= sent
                    txLeft &-= UInt64(sent)
                    continue
                }
                let n = try net.rx(p).pointee.receive(into: &bursts[p])
                moved &+= n
                guard n > 0 else { continue }
                if let capture { for i in 0..<n { record(bursts[p], i, capture, scratch) } }
                switch o.mode {
                case .rxonly, .txonly:
                    break
                case .io, .macswap:
                    if o.mode == .macswap {
                        for i in 0..<n where bursts[p][i].first.count >= 12 { NetPackets.swapMACs(bursts[p][i].first.baseAddress!) }
                    }
                    let sent = try tx.pointee.transmit(bursts[p], 0..<n)
                    if captureSent, let capture { for i in 0..<sent { record(bursts[p], i, capture, scratch) } }
                case .icmpecho:
                    var k = 0
                    for i in 0..<n {
                        let f = bursts[p][i]
                        guard f.isContiguous else { extra.ignored &+= 1; continue }
                        switch NetPackets.answer(f.first, ip: o.ip, mac: ourMAC) {
                        case .none: extra.ignored &+= 1
                        case .arpReply: extra.arpReplies &+= 1; picks[k] = i; k &+= 1
                        case .echoReply: extra.echoReplies &+= 1; picks[k] = i; k &+= 1
                        }
                    }
                    if k > 0 {
                        _ = try tx.pointee.transmit(count: k) { j, buffer in
                            if captureSent, let capture { record(bursts[p], picks[j], capture, scratch) }
                            return NetTxFrameInfo(length: bursts[p].copy(picks[j], to: buffer))
                        }
                    }
                }
            }
            // The clock every 16th turn in poll mode: reading it each turn took 15% of a receive
            // loop (perf: the vDSO's clock_gettime). With interrupts a turn may sleep, so each one.
            turn &+= 1
            if o.interrupts || turn & 15 == 0 {
                let now = monotonicNanoseconds()
                if now &- lastReport >= o.reportIntervalNanoseconds {
                    let before = mc_thread_count()
                    let t = totals(net, extra, start)
                    report(t, Double(now &- lastReport) / 1e9)
                    lastReport = now
                    capture?.flush()
                    _ = try net.pollLink()
                    if allocationsFrom == nil { allocationsFrom = mc_thread_count(); framesFrom = t.rx.packets &+ t.tx.packets }
                    else { allocationsOutside &+= mc_thread_count() &- before }
                }
                if let d = o.durationNanoseconds, now &- start >= d { break }
            }
            limitCount &+= UInt64(moved)
            if let limit = o.frameLimit, limitCount >= limit { break }
            if moved > 0 {
                idleTurns = 0
            } else if o.interrupts, o.mode != .txonly {
                for p in 0..<pairs { net.rx(p).pointee.waitForInterrupt(timeoutMilliseconds: pairs == 1 ? 100 : 1) }
            } else {
                idleTurns &+= 1
                if idleTurns > 1000 { sched_yield() }
            }
        }
        if let from = allocationsFrom {
            extra.steadyAllocations = mc_thread_count() &- from &- allocationsOutside
            let t = totals(net, extra, start)
            extra.steadyFrames = t.rx.packets &+ t.tx.packets &- framesFrom
        }
        // Let what is in flight finish so the totals on both sides agree: transmit buffers are
        // reclaimed, and frames already in the receive rings are counted, nothing more posted.
        let end = monotonicNanoseconds() &+ 500_000_000
        for p in 0..<pairs {
            while (try? net.tx(p).pointee.reclaim()) != nil, net.tx(p).pointee.inFlight > 0, monotonicNanoseconds() < end { sched_yield() }
            // Frames the device never took back: say where the ring stands, so a stall can be told apart.
            if net.tx(p).pointee.stallNotifications > 0 {
                net.logger.warning("transmit queue \(2 * p + 1): the ring sat full with nothing used back \(net.tx(p).pointee.stallNotifications) time(s); the device was notified anyway each time")
            }
            if net.tx(p).pointee.inFlight > 0 {
                net.logger.warning("transmit queue \(2 * p + 1): \(net.tx(p).pointee.inFlight) frame(s) still with the device at the end: \(net.tx(p).pointee.virtqueue.notificationState)")
            }
        }
        if o.mode != .txonly {
            var quietSince = monotonicNanoseconds()
            while monotonicNanoseconds() &- quietSince < 20_000_000, monotonicNanoseconds() < end {
                for p in 0..<pairs {
                    let n = try net.rx(p).pointee.receive(into: &bursts[p], refilling: false)
                    if n > 0 { quietSince = monotonicNanoseconds() }
                    if let capture { for i in 0..<n { record(bursts[p], i, capture, scratch) } }
                }
            }
        }
        capture?.flush()
        return totals(net, extra, start)
    }

    /// One txonly frame: the template's bytes, or nothing when it does not fit (0 ends the burst).
    @inlinable @inline(__always)
    static func copyFrame(_ template: UnsafeMutableRawBufferPointer, _ length: Int, to b: UnsafeMutableRawBufferPointer) -> NetTxFrameInfo {
        guard length > 0, length <= b.count, let d = b.baseAddress, let s = template.baseAddress else { return NetTxFrameInfo(length: 0) }
        d.copyMemory(from: s, byteCount: length)
        return NetTxFrameInfo(length: length)
    }

    /// The pairs' counters summed, with the mode's own.
    @inlinable
    static func totals<T>(_ net: NetDevice<T>, _ extra: NetForwardTotals, _ start: UInt64) -> NetForwardTotals {
        var t = extra
        for p in 0..<net.activePairs { t.rx = t.rx + net.rxStats(p); t.tx = t.tx + net.txStats(p) }
        t.seconds = Double(monotonicNanoseconds() &- start) / 1e9
        return t
    }

    /// Frame `i` of `burst` into the capture (a merged frame joined in `scratch` first).
    @inlinable
    static func record(_ burst: borrowing NetRxBurst, _ i: Int, _ capture: PacketCapture, _ scratch: UnsafeMutableRawBufferPointer) {
        let f = burst[i]
        if f.isContiguous { capture.write(f.first.baseAddress!, length: f.length) }
        else { capture.write(scratch.baseAddress!, length: burst.copy(i, to: scratch)) }
    }
}
