import CShim
import Synchronization
import VirtioCore
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// What the register model hands a queue when the driver enables it.
struct QueueStart {
    let size: Int
    let addresses: QueueAddresses
    let packed: Bool
    let features: RingFeatures
    let interruptFD: Int32?
    /// Continue from a saved ring position (device parts restored into a member), or start fresh.
    var resume: RingPosition? = nil
}

/// Mutable state of one device queue; only touched under its queue's lock.
struct EngineState: ~Copyable, @unchecked Sendable {
    var ring: DeviceQueue<DMAArena>?
    var inOrder = false
    var interruptFD: Int32?
    let scratch: UnsafeMutableBufferPointer<ChainElement>
    var batchIDs: UnsafeMutableBufferPointer<UInt16>
    var batchLengths: UnsafeMutableBufferPointer<UInt32>
    var batchDescriptors: UnsafeMutableBufferPointer<UInt16>
    /// A buffer the device keeps to return later (statistics queue): its id and ring descriptors.
    var kept: (id: UInt16, descriptors: UInt16)?
    /// A hostile fault mode has struck (it strikes once).
    var hostileFired = false
    /// A receive queue's frame in delivery (net).
    var rx = ReceiveDelivery()
}

/// One device queue of the software function: pops requests, hands them to the personality,
/// and returns them in order under IN_ORDER and deliberately out of order (reversed per batch) otherwise.
final class SoftQueue: @unchecked Sendable {
    /// Requests served before their used entries are returned (one batch, one notification decision).
    static let batchLimit = 32
    let index: Int
    let state: Mutex<EngineState>
    let notifyCount = Atomic<Int>(0)
    let lastNotifyValue = Atomic<UInt32>(0)
    let interruptCount = Atomic<Int>(0)
    /// Buffers returned to the driver (the poller watches it to tell work from idle).
    let completedCount = Atomic<Int>(0)
    /// A one-shot fault armed at run time (`SoftInjectedFault.code`; 0: none), taken by the next request.
    let armed = Atomic<UInt8>(0)
    /// The longest chain the device accepts (direct chains are also bounded by the queue size).
    static let chainLimit = 1024

    /// Where rules the driver broke on this queue go (the function's log).
    let log: ConformanceLog

    init(index: Int, maxSize: Int, log: ConformanceLog = ConformanceLog()) {
        self.index = index
        self.log = log
        state = Mutex(EngineState(
            scratch: .allocate(capacity: Self.chainLimit),
            batchIDs: .allocate(capacity: maxSize), batchLengths: .allocate(capacity: maxSize),
            batchDescriptors: .allocate(capacity: maxSize)))
    }

    deinit {
        state.withLock { s in
            s.ring = nil  // the ring before the scratch it pops into
            s.rx.free()
            s.scratch.deallocate()
            s.batchIDs.deallocate()
            s.batchLengths.deallocate()
            s.batchDescriptors.deallocate()
        }
    }

    /// Attaches the device side to the rings the driver programmed; nil on success, else why not.
    func start(_ q: QueueStart, memory: DMAArena) -> String? {
        let a = q.addresses
        return state.withLock { s -> String? in
            do {
                s.ring = try DeviceQueue(packed: q.packed, queueSize: q.size, descriptors: a.descriptors, driver: a.driver,
                                         device: a.device, memory: memory, features: q.features, resuming: q.resume)
            } catch {
                return "\(error)"
            }
            s.inOrder = q.features.inOrder
            s.interruptFD = q.interruptFD
            return nil
        }
    }

    func stop() { state.withLock { s in s.ring = nil; s.kept = nil; s.rx.forget() } }

    /// Stops the queue and says where its device side stood, in one hold of the lock (a device
    /// thread polling the queue cannot serve a request between the two).
    func stopAndReport() -> RingPosition? {
        state.withLock { s in
            defer { s.ring = nil; s.kept = nil; s.rx.forget() }
            return s.ring?.position
        }
    }

    /// Returns the kept buffer (0 bytes written) and signals the driver; false when none is kept.
    /// `unasked`: fault injection, the device returns a buffer it was never given instead.
    func returnKept(isr: borrowing Atomic<UInt8>, unasked: Bool = false) -> Bool {
        state.withLock { s -> Bool in
            guard let k = s.kept else { return false }
            s.kept = nil
            guard s.ring != nil else { return false }
            if unasked { s.ring!.pushHostile(.idOutOfRange, id: k.id, length: 0, ringDescriptors: k.descriptors) }
            else { s.ring!.pushUsed(id: k.id, length: 0, ringDescriptors: k.descriptors) }
            signalUsed(&s, isr: isr)
            return true
        }
    }

    /// Where the device side stands (nil when the queue is not running).
    var position: RingPosition? {
        state.withLock { s in
            s.ring?.position
        }
    }

    /// Waits until no drain is running (a stop is seen by every later `process`: both take the lock).
    func quiesce() { state.withLock { _ in } }

    /// Serves everything available, unless the function is stopped (DEV_MODE_SET): then the
    /// buffers stay in the ring for whoever resumes it. Returns the first rule the driver broke, if any.
    /// `polling`: a device thread calls this in a loop, so available-buffer notifications stay off.
    func process<P: SoftPersonality>(personality: P, memory: DMAArena, negotiated: FeatureSet,
                                     faults: SoftFaults, isr: borrowing Atomic<UInt8>,
                                     stopped: borrowing Atomic<Bool>, polling: Bool = false) -> String? {
        state.withLock { s -> String? in
            if stopped.load(ordering: .acquiring) { return nil }
            guard s.ring != nil else { return polling ? nil : "queue \(index) was notified but is not enabled" }
            if personality.isReceiveQueue(index) {
                return serviceReceive(&s, personality, memory, negotiated, isr, polling)
            }
            return drain(&s, personality, memory, negotiated, faults, isr, polling)
        }
    }

    /// Pops and serves until the ring is empty. `s.ring` is non-nil (the caller checked, under the lock).
    private func drain<P: SoftPersonality>(
        _ s: inout EngineState, _ personality: P, _ memory: DMAArena, _ negotiated: FeatureSet,
        _ faults: SoftFaults, _ isr: borrowing Atomic<UInt8>, _ polling: Bool
    ) -> String? {
        var failure: String?
        // Work with notifications off, then re-arm; re-arming reports buffers that raced in.
        s.ring!.disableAvailNotifications()
        repeat {
            var n = 0
            // At most 32 before the used entries go back (DPDK vhost's MAX_PKT_BURST): a driver that
            // resubmits as fast as it completes (io forwarding over a loop) would otherwise grow one
            // batch to the whole ring while its own transmit ring fills with buffers held here.
            while n < min(s.batchIDs.count, Self.batchLimit) {
                let chain: AvailableChain?
                do { chain = try s.ring!.popAvailable(into: s.scratch) } catch {
                    failure = "queue \(index): \(error)"
                    break
                }
                guard let chain else { break }
                var outcome = personality.handle(queue: index, chain: chain, elements: s.scratch, memory: memory,
                                                 negotiated: negotiated)
                if case .used = outcome, armed.load(ordering: .relaxed) == SoftInjectedFault.hold.code,
                   armed.compareExchange(expected: SoftInjectedFault.hold.code, desired: 0, ordering: .relaxed).exchanged {
                    outcome = .held  // injected: this request is kept and never completed
                }
                switch outcome {
                case let .used(length):
                    s.batchIDs[n] = chain.id
                    s.batchLengths[n] = length
                    s.batchDescriptors[n] = chain.ringDescriptors
                    n += 1
                case let .malformed(why):
                    failure = "queue \(index): \(why)"
                case .held:
                    break  // fault injection: the device keeps the buffer and never returns it
                case .keep:
                    s.kept = (chain.id, chain.ringDescriptors)
                }
                if failure != nil { break }
                if armed.load(ordering: .relaxed) == SoftInjectedFault.needsReset.code,
                   armed.compareExchange(expected: SoftInjectedFault.needsReset.code, desired: 0, ordering: .relaxed).exchanged {
                    failure = "fault injected: DEVICE_NEEDS_RESET"
                    break
                }
                if let limit = faults.needsResetAfterRequests, let blk = personality as? SoftBlock, blk.served == limit {
                    failure = "fault injected: DEVICE_NEEDS_RESET after \(limit) requests"
                    break
                }
            }
            complete(&s, count: n, faults: faults, isr: isr)
            if failure != nil { return failure }
            if n == 0 { break }
        } while true
        if polling { return nil }  // the poller comes back; the driver need not ring
        if s.ring!.enableAvailNotifications() {
            return drain(&s, personality, memory, negotiated, faults, isr, polling)
        }
        return nil
    }

    /// Returns a batch: one in-order batch entry, or single entries in reverse order.
    private func complete(_ s: inout EngineState, count n: Int,
                                                     faults: SoftFaults, isr: borrowing Atomic<UInt8>) {
        guard n > 0 else { return }
        let before = completedCount.add(n, ordering: .relaxed).oldValue
        var strike = faults.hostileUsed.flatMap { !s.hostileFired && before + n > faults.faultAfterRequests ? $0 : nil }
        let code = armed.load(ordering: .relaxed)
        if strike == nil, code != 0, let injected = SoftInjectedFault(code: code), case let .hostile(kind) = injected,
           armed.compareExchange(expected: code, desired: 0, ordering: .relaxed).exchanged {
            strike = kind
        }
        if let hostile = strike {
            // Fault injection: this batch goes back the way a hostile device returns buffers.
            s.hostileFired = s.hostileFired || faults.hostileUsed != nil
            s.ring!.pushHostile(hostile, id: s.batchIDs[0], length: s.batchLengths[0], ringDescriptors: s.batchDescriptors[0])
            signalUsed(&s, isr: isr)
            return
        }
        if s.inOrder {
            if n > 1 {
                var descriptors: UInt16 = 0
                for i in 0..<n { descriptors &+= s.batchDescriptors[i] }
                // In-order: one used entry for the last buffer retires the whole batch.
                s.ring!.pushUsedBatch(lastID: s.batchIDs[n - 1], length: s.batchLengths[n - 1],
                                   buffers: UInt16(n), ringDescriptors: descriptors)
            } else {
                s.ring!.pushUsed(id: s.batchIDs[0], length: s.batchLengths[0], ringDescriptors: s.batchDescriptors[0])
            }
        } else {
            // Reverse order (drivers must cope with any order), published in one burst.
            var (lo, hi) = (0, n - 1)
            while lo < hi {
                s.batchIDs.swapAt(lo, hi)
                s.batchLengths.swapAt(lo, hi)
                s.batchDescriptors.swapAt(lo, hi)
                (lo, hi) = (lo + 1, hi - 1)
            }
            s.ring!.pushUsedBurst(ids: s.batchIDs.baseAddress!, lengths: s.batchLengths.baseAddress!,
                                  ringDescriptors: s.batchDescriptors.baseAddress!, count: n)
        }
        signalUsed(&s, isr: isr)
        if faults.notifyStorm, let fd = s.interruptFD {  // fault: a storm of interrupts nobody asked for
            var many: UInt64 = 64
            _ = write(fd, &many, 8)
        }
    }

    /// A used-buffer notification, if the driver wants one: MSI-X eventfd, else the ISR bit.
    func signalUsed(_ s: inout EngineState, isr: borrowing Atomic<UInt8>) {
        if s.ring!.needsInterrupt() {
            interruptCount.add(1, ordering: .relaxed)
            if let fd = s.interruptFD {
                var one: UInt64 = 1
                _ = write(fd, &one, 8)
            } else {
                isr.bitwiseOr(1, ordering: .acquiringAndReleasing)  // INTx: the queue-interrupt ISR bit
            }
        }
    }
}
