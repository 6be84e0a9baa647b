import Synchronization
import VirtioCore
import VirtioRing
import VirtioWire

/// Counters of what the software net device moved (all of its queues together).
public struct SoftNetCounters: Sendable, Equatable {
    public var txFrames: UInt64 = 0, txBytes: UInt64 = 0, txDropped: UInt64 = 0
    public var rxFrames: UInt64 = 0, rxBytes: UInt64 = 0, rxDropped: UInt64 = 0, rxFiltered: UInt64 = 0
    public var controlCommands: UInt64 = 0, controlErrors: UInt64 = 0
}

/// Called for each received frame with its 12 header bytes as the device is about to hand them over
/// and the used length of each buffer the frame took; it may rewrite both (lengths, flags, gso_type,
/// num_buffers: whatever a hostile device could write).
public typealias NetRxTamper = @Sendable (_ header: UnsafeMutableRawBufferPointer, _ lengths: UnsafeMutableBufferPointer<UInt32>) -> Void

/// The receive filter the driver set through the control queue (QEMU's state at reset: promiscuous).
struct SoftNetFilter: Sendable {
    var promiscuous = true
    var allMulticast = false
    var unicast: [[UInt8]] = []
    var multicast: [[UInt8]] = []
}

/// The virtio-net personality: config (MAC, status, pairs, MTU), transmit queues whose frames go
/// to the backend (loop, null, pair), receive queues filled with frames as buffers allow
/// (mergeable or not), and the control queue (RX modes, MAC, MAC table, pairs, announce).
public final class SoftNet: SoftPersonality, @unchecked Sendable {
    public let options: SoftNetOptions
    /// The function this personality is behind (frames for it arrive through it), and the other end of a pair.
    weak var function: SoftPCIFunction<SoftNet>?
    weak var peer: SoftNet?
    let state = Mutex(SoftNetFilter())
    let macBits: Atomic<UInt64>
    let statusBits: Atomic<UInt16>
    let activePairsCount = Atomic<Int>(1)
    let counts = Mutex(SoftNetCounters())
    let rxFaultFired = Atomic<Bool>(false)
    let netFaultFired = Atomic<Bool>(false)
    /// A hand in what the device writes for each frame it receives (a fuzzer's or a test's); nil in use.
    /// Set it before the driver attaches.
    public nonisolated(unsafe) var rxTamper: NetRxTamper?
    /// One frame buffer per transmit queue (each used only under its queue's lock).
    let txScratch: [UnsafeMutableRawPointer]
    /// Null source: per receive queue, the time of the last frame (nanoseconds), under that queue's lock.
    let sourceClock: UnsafeMutablePointer<UInt64>

    public init(options: SoftNetOptions) {
        self.options = options
        macBits = Atomic(Self.pack(options.mac))
        statusBits = Atomic(options.linkUp ? NetStatusBit.linkUp : 0)
        txScratch = (0..<options.queues).map { _ in .allocate(byteCount: ReceiveDelivery.capacity, alignment: 64) }
        sourceClock = .allocate(capacity: options.queues)
        sourceClock.initialize(repeating: 0, count: options.queues)
    }

    deinit {
        for p in txScratch { p.deallocate() }
        sourceClock.deallocate()
    }

    static func pack(_ m: [UInt8]) -> UInt64 { m.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) } }
    static func unpack(_ v: UInt64) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    public var mac: [UInt8] { Self.unpack(macBits.load(ordering: .relaxed)) }
    /// The device asked for an announcement the driver has not acknowledged (status bit 2).
    public var announcePending: Bool { statusBits.load(ordering: .relaxed) & NetStatusBit.announce != 0 }
    public var linkUp: Bool { statusBits.load(ordering: .relaxed) & NetStatusBit.linkUp != 0 }
    /// Pairs the driver enabled with VQ_PAIRS_SET (1 until it does).
    public var activePairs: Int { activePairsCount.load(ordering: .relaxed) }
    public var counters: SoftNetCounters { counts.withLock { $0 } }
    public var promiscuous: Bool { state.withLock { $0.promiscuous } }
    public var allMulticast: Bool { state.withLock { $0.allMulticast } }

    public var deviceType: VirtioDeviceType { .net }
    public var pairs: Int { options.queues }
    public var controlQueueIndex: Int? { options.controlQueue ? 2 * pairs : nil }
    public var queueCount: Int { 2 * pairs + (options.controlQueue ? 1 : 0) }
    /// A vhost-user frontend serves the control queue itself (QEMU, DPDK virtio-user): only data rings.
    public var vhostQueueCount: Int { 2 * pairs }
    public var vhostQueueNumber: Int { pairs }

    /// Over vhost-user VQ_PAIRS_SET stays with the frontend, which enables and disables rings for it:
    /// the pairs in use reach to the last one with a running ring (a frontend stopping rings one by
    /// one at the end, pair 0 first, leaves the others' frames in range).
    public func hostedRingsChanged(running: (Int) -> Bool) {
        let last = (0..<pairs).last { running(2 * $0) || running(2 * $0 + 1) }
        activePairsCount.store(max(1, (last ?? 0) + 1), ordering: .relaxed)
    }
    public var maxQueueSize: Int { options.queueSize }
    public func isReceiveQueue(_ queue: Int) -> Bool { queue < 2 * pairs && queue % 2 == 0 }

    public var deviceFeatures: FeatureSet {
        var f: FeatureSet = [NetFeature.mac]
        if options.status { f.insert(NetFeature.status) }
        if options.mtu != nil { f.insert(NetFeature.mtu) }
        if options.mergeable { f.insert(NetFeature.mrgRxbuf) }
        if options.controlQueue {
            for b in [NetFeature.ctrlVQ, NetFeature.ctrlRX, NetFeature.ctrlMACAddr, NetFeature.guestAnnounce] { f.insert(b) }
            if pairs > 1 { f.insert(NetFeature.mq) }
        }
        if options.checksum { f.insert(NetFeature.csum); f.insert(NetFeature.guestCsum) }
        if options.speed != nil { f.insert(NetFeature.speedDuplex) }
        return f
    }

    /// `struct virtio_net_config` through rss_max_indirection_table_length (20 bytes), little-endian.
    public func configBytes() -> [UInt8] {
        var c = [UInt8](repeating: 0, count: 20)
        for (i, b) in mac.enumerated() { c[NetConfigField.mac + i] = b }
        let st = statusBits.load(ordering: .relaxed)
        c[NetConfigField.status] = UInt8(st & 0xff)
        c[NetConfigField.status + 1] = UInt8(st >> 8)
        c[NetConfigField.maxVirtqueuePairs] = UInt8(pairs & 0xff)
        c[NetConfigField.maxVirtqueuePairs + 1] = UInt8(pairs >> 8)
        let mtu = options.mtu ?? 1500
        c[NetConfigField.mtu] = UInt8(mtu & 0xff)
        c[NetConfigField.mtu + 1] = UInt8(mtu >> 8)
        let speed = options.speed ?? 0xffff_ffff
        for i in 0..<4 { c[NetConfigField.speed + i] = UInt8(truncatingIfNeeded: speed >> (8 * UInt32(i))) }
        c[NetConfigField.duplex] = options.speed == nil ? 0xff : options.duplex
        return c
    }

    /// Reset: the MAC, filters, pairs and announce request go back to their start (QEMU's virtio_net_reset).
    public func deviceReset() {
        macBits.store(Self.pack(options.mac), ordering: .relaxed)
        state.withLock { $0 = SoftNetFilter() }
        activePairsCount.store(1, ordering: .relaxed)
        _ = statusBits.bitwiseAnd(~NetStatusBit.announce, ordering: .relaxed)
    }

    func count(_ body: (inout SoftNetCounters) -> Void) { counts.withLock { body(&$0) } }

    /// Whether a frame to `destination` passes the filter the driver set.
    func accepts(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count >= 6 else { return false }
        var bits: UInt64 = 0
        for i in 0..<6 { bits |= UInt64(frame[i]) << (8 * UInt64(i)) }
        if bits == macBits.load(ordering: .relaxed) || bits == 0xffff_ffff_ffff { return true }
        return state.withLock { f in
            if f.promiscuous { return true }
            let d = Self.unpack(bits)
            if d[0] & 1 != 0 { return f.allMulticast || f.multicast.contains(d) }
            return f.unicast.contains(d)
        }
    }

    /// The hostile receive mode, once it is due.
    func rxFaultNow() -> NetRxFault? {
        guard let f = options.rxFault, counters.rxFrames >= UInt64(options.faults.faultAfterRequests),
              !rxFaultFired.exchange(true, ordering: .relaxed) else { return nil }
        return f
    }

    public func handle(queue: Int, chain: AvailableChain, elements: UnsafeMutableBufferPointer<ChainElement>,
                       memory: DMAArena, negotiated: FeatureSet) -> RequestOutcome {
        if queue == controlQueueIndex {
            return control(ChainIO(elements: elements, chain: chain, memory: memory), negotiated: negotiated)
        }
        return transmit(pair: queue / 2, ChainIO(elements: elements, chain: chain, memory: memory), negotiated: negotiated)
    }

    /// A null-source frame for receive queue `queue`, when its rate allows one now.
    public func originate(queue: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard options.backend == .null, options.nullRate != 0, linkUp else { return nil }
        let pair = queue / 2
        guard pair < activePairs else { return nil }
        if let rate = options.nullRate {
            let now = monotonicNanoseconds()
            let gap = 1_000_000_000 / UInt64(rate)
            guard now &- sourceClock[pair] >= gap else { return nil }
            sourceClock[pair] = now
        }
        let n = NetPackets.writeUDP(into: buffer, length: options.nullSize, destination: mac,
                                    source: [0x02, 0, 0, 0, 0, 0x01], sourceIP: 0xA9FE_0001, destinationIP: 0xA9FE_0002)
        count { $0.rxFrames &+= 1; $0.rxBytes &+= UInt64(n) }
        return n
    }
}
