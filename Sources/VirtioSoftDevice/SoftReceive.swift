import Synchronization
import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// How a hostile net device returns a received frame (`soft:net,fault=NAME`).
public enum NetRxFault: String, Sendable, CaseIterable {
    /// A used length shorter than the 12-byte header.
    case shortLength = "rx_short_len"
    /// num_buffers 0 (mergeable buffers).
    case numBuffersZero = "rx_num_buffers_zero"
    /// num_buffers far more than the buffers the driver posted.
    case numBuffersExcess = "rx_num_buffers_excess"
    /// Flag bits the spec does not define, with csum_start/offset and hdr_len set but NEEDS_CSUM clear.
    case unknownFlags = "rx_unknown_flags"
    /// A gso_type although no GUEST_* segmentation offload was negotiated.
    case badGSO = "rx_bad_gso"
}

/// What became of a frame handed to a receive queue.
public enum SoftDelivery: Sendable, Equatable {
    case delivered
    /// Written in part or waiting for buffers: it goes out when the driver posts more.
    case queued
    /// No room (a frame already waits, or the queue is not running).
    case dropped
}

/// A receive queue's frame in delivery: header and frame bytes, how far they got into the
/// driver's buffers, and a chain popped for a frame it could not hold (kept for the next one).
struct ReceiveDelivery {
    static let capacity = NetHeader.size + 65550
    var pending: UnsafeMutableRawPointer?
    var length = 0
    var offset = 0
    var mergeable = false
    var fault: NetRxFault?
    var tamper: NetRxTamper?
    var headerAt: UnsafeMutableRawPointer?
    var usedCount = 0
    var numBuffersAt: (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) = (nil, nil)
    var held: AvailableChain?
    var heldElements: UnsafeMutableBufferPointer<ChainElement>?
    /// A frame too big for a buffer without mergeable buffers has been reported once.
    var reportedSmall = false

    mutating func forget() {
        length = 0
        offset = 0
        usedCount = 0
        held = nil
    }

    mutating func free() {
        pending?.deallocate()
        pending = nil
        heldElements?.deallocate()
        heldElements = nil
    }
}

extension SoftQueue {
    /// Hands `frame` (without a virtio header) to this receive queue: it goes into the driver's
    /// buffers now, or waits (one frame) for buffers the driver posts later; `header` carries
    /// flags (DATA_VALID). Safe from any thread (another function's transmit, a traffic source).
    func deliver(_ frame: UnsafeRawBufferPointer, header: NetHeader, mergeable: Bool, fault: NetRxFault?,
                 tamper: NetRxTamper? = nil, memory: DMAArena, isr: borrowing Atomic<UInt8>) -> (SoftDelivery, String?) {
        state.withLock { s -> (SoftDelivery, String?) in
            guard s.ring != nil else { return (.dropped, nil) }
            if s.rx.length > 0 {
                if let why = flushReceive(&s, memory, isr) { return (.dropped, why) }
                if s.rx.length > 0 { return (.dropped, nil) }
            }
            guard NetHeader.size + frame.count <= ReceiveDelivery.capacity else { return (.dropped, nil) }
            if s.rx.pending == nil { s.rx.pending = .allocate(byteCount: ReceiveDelivery.capacity, alignment: 64) }
            var h = header
            // num_buffers: 1 unless merged (the device MUST set it; patched once the count is known).
            h.numBuffers = mergeable ? 0 : 1
            h.store(to: s.rx.pending!)
            if frame.count > 0 { (s.rx.pending! + NetHeader.size).copyMemory(from: frame.baseAddress!, byteCount: frame.count) }
            s.rx.length = NetHeader.size + frame.count
            s.rx.offset = 0
            s.rx.usedCount = 0
            s.rx.mergeable = mergeable
            s.rx.fault = fault
            s.rx.tamper = tamper
            if let why = flushReceive(&s, memory, isr) { return (.dropped, why) }
            return (s.rx.length == 0 ? .delivered : .queued, nil)
        }
    }

    /// A receive queue was notified or polled: a waiting frame goes out, then frames the device
    /// originates (a traffic source) while buffers last.
    func serviceReceive<P: SoftPersonality>(_ s: inout EngineState, _ personality: P, _ memory: DMAArena,
                                            _ negotiated: FeatureSet, _ isr: borrowing Atomic<UInt8>,
                                            _ polling: Bool) -> String? {
        if s.rx.length > 0, let why = flushReceive(&s, memory, isr) { return why }
        guard s.rx.length == 0 else { return nil }
        let mergeable = negotiated.contains(NetFeature.mrgRxbuf)
        if s.rx.pending == nil { s.rx.pending = .allocate(byteCount: ReceiveDelivery.capacity, alignment: 64) }
        var made = 0
        while made < 64, s.rx.length == 0 {
            let room = UnsafeMutableRawBufferPointer(start: s.rx.pending! + NetHeader.size,
                                                     count: ReceiveDelivery.capacity - NetHeader.size)
            guard let n = personality.originate(queue: index, into: room) else { break }
            NetHeader(numBuffers: mergeable ? 0 : 1).store(to: s.rx.pending!)
            s.rx.length = NetHeader.size + n
            s.rx.offset = 0
            s.rx.usedCount = 0
            s.rx.mergeable = mergeable
            s.rx.fault = nil
            s.rx.tamper = nil
            if let why = flushReceive(&s, memory, isr) { return why }
            made += 1
        }
        return nil
    }

    /// The next chain for a frame: one kept from before, else one popped (nil: none available;
    /// notifications are then on, so the driver's next post rings).
    private func nextChain(_ s: inout EngineState) throws(RingError) -> (AvailableChain, UnsafeMutableBufferPointer<ChainElement>)? {
        if let h = s.rx.held {
            s.rx.held = nil
            return (h, s.rx.heldElements!)
        }
        if let c = try s.ring!.popAvailable(into: s.scratch) { return (c, s.scratch) }
        // Empty: ask for a notification, then look once more (a post may have raced the enable).
        guard s.ring!.enableAvailNotifications() else { return nil }
        s.ring!.disableAvailNotifications()
        return try s.ring!.popAvailable(into: s.scratch).map { ($0, s.scratch) }
    }

    /// Writes the waiting frame into as many buffers as it needs; once all of it is in, returns
    /// them used (one signal). Returns why the device must stop (a driver error), or nil.
    func flushReceive(_ s: inout EngineState, _ memory: DMAArena, _ isr: borrowing Atomic<UInt8>) -> String? {
        while s.rx.offset < s.rx.length {
            let next: (AvailableChain, UnsafeMutableBufferPointer<ChainElement>)?
            do { next = try nextChain(&s) } catch { return "queue \(index): \(error)" }
            guard let (chain, elements) = next else { return nil }  // waits for buffers
            guard chain.writableLength > 0 else {
                return "receive queue \(index) holds a buffer with no device-writable part (QEMU: \"receive queue contains no in buffers\")"
            }
            let io = ChainIO(elements: elements, chain: chain, memory: memory)
            let writable = Int(min(chain.writableLength, UInt64(ReceiveDelivery.capacity)))
            if !s.rx.mergeable, writable < s.rx.length {
                // The frame does not fit: it is dropped and the buffer kept for the next (as QEMU does).
                if !s.rx.reportedSmall, writable < 1526 {
                    s.rx.reportedSmall = true
                    log.violation("net Setting Up Receive Buffers: without MRG_RXBUF the driver SHOULD post buffers of at least 1526 bytes",
                                  "receive queue \(index): a buffer of \(writable) bytes for a \(s.rx.length)-byte packet")
                }
                keep(&s, chain, elements)
                s.rx.forgetFrame()
                return nil
            }
            if s.rx.mergeable, s.rx.offset == 0, writable < NetHeader.size {
                return "receive queue \(index): a mergeable buffer of \(writable) bytes is shorter than the 12-byte header (the driver MUST post at least that)"
            }
            let n = min(writable, s.rx.length - s.rx.offset)
            guard io.write(at: 0, from: s.rx.pending! + s.rx.offset, length: n) else {
                return "queue \(index): a receive buffer lies outside the driver's memory"
            }
            if s.rx.offset == 0 {
                s.rx.numBuffersAt = (io.writablePointer(at: 10), io.writablePointer(at: 11))
                s.rx.headerAt = io.writablePointer(at: 0)
                // flags, gso_type, hdr_len, csum_start, csum_offset: bytes 0-7 of the header.
                let lie: [UInt8]? = switch s.rx.fault {
                case .unknownFlags: [0xF8, 0, 0x34, 0x12, 0x10, 0, 0x06, 0]
                case .badGSO: [0, NetHeader.gsoTCPv4, 54, 0, 0, 0, 0, 0]
                default: nil
                }
                for (k, b) in (lie ?? []).enumerated() { io.writablePointer(at: k)?.storeBytes(of: b, as: UInt8.self) }
            }
            s.batchIDs[s.rx.usedCount] = chain.id
            s.batchLengths[s.rx.usedCount] = UInt32(n)
            s.batchDescriptors[s.rx.usedCount] = chain.ringDescriptors
            s.rx.usedCount += 1
            s.rx.offset += n
        }
        guard s.rx.length > 0 else { return nil }
        var count = UInt16(truncatingIfNeeded: s.rx.usedCount)
        switch s.rx.fault {
        case .numBuffersZero: count = 0
        case .numBuffersExcess: count = count &+ 1000
        case .shortLength: s.batchLengths[0] = 5
        case .unknownFlags, .badGSO, nil: break
        }
        if s.rx.mergeable || s.rx.fault == .numBuffersZero || s.rx.fault == .numBuffersExcess {
            s.rx.numBuffersAt.0?.storeBytes(of: UInt8(count & 0xff), as: UInt8.self)
            s.rx.numBuffersAt.1?.storeBytes(of: UInt8(count >> 8), as: UInt8.self)
        }
        if let tamper = s.rx.tamper, let h = s.rx.headerAt, s.rx.numBuffersAt.1 == h + 11 {
            tamper(UnsafeMutableRawBufferPointer(start: h, count: NetHeader.size),
                   UnsafeMutableBufferPointer(rebasing: s.batchLengths[0..<s.rx.usedCount]))
        }
        // A merged frame's buffers reach the driver together, in one burst.
        s.ring!.pushUsedBurst(ids: s.batchIDs.baseAddress!, lengths: s.batchLengths.baseAddress!,
                              ringDescriptors: s.batchDescriptors.baseAddress!, count: s.rx.usedCount)
        completedCount.add(1, ordering: .relaxed)
        s.rx.forgetFrame()
        signalUsed(&s, isr: isr)
        return nil
    }

    private func keep(_ s: inout EngineState, _ chain: AvailableChain, _ elements: UnsafeMutableBufferPointer<ChainElement>) {
        if s.rx.heldElements == nil { s.rx.heldElements = .allocate(capacity: Self.chainLimit) }
        if elements.baseAddress != s.rx.heldElements!.baseAddress {
            for i in 0..<chain.elementCount { s.rx.heldElements![i] = elements[i] }
        }
        s.rx.held = chain
    }
}

extension ReceiveDelivery {
    mutating func forgetFrame() {
        length = 0
        offset = 0
        usedCount = 0
    }
}
