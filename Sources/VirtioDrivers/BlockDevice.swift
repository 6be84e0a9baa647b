import Logging
import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// How to attach a block device.
public struct BlockAttachOptions: Sendable {
    public var policy = FeaturePolicy()
    /// Request queues to set up (nil: all the device offers).
    public var queues: Int?
    /// Queue size (nil: the device's maximum).
    public var queueSize: Int?
    /// How long the synchronous helpers wait for a completion.
    public var timeoutMilliseconds = 10_000
    /// MSI-X mode: vector 0 for config changes, one per queue after it (queues are limited to
    /// the table); waits sleep on eventfds. Off: poll mode, no interrupts at all.
    public var interrupts = false
    /// Accept seed 000's draft statistics queue (feature bit 23, this project's choice) when offered.
    public var draftStatsQueue = false
    public init() {}
}

/// The virtio-blk device-type bits this driver understands.
public let blockDriverFeatures: FeatureSet = [
    BlockFeature.sizeMax, BlockFeature.segMax, BlockFeature.readOnly, BlockFeature.blockSize, BlockFeature.flush,
    BlockFeature.topology, BlockFeature.multiQueue, BlockFeature.discard, BlockFeature.writeZeroes,
]

/// A virtio-blk device: negotiation, config, N request queues, and synchronous helpers over queue 0.
/// For throughput, drive queues directly with `withQueue` (submit several, kick, poll).
public final class BlockDevice<T: VirtioTransport> {
    public let device: VirtioDevice<T>
    public let config: BlockConfig
    public let queueCount: Int
    public let timeoutMilliseconds: Int
    /// The features attach negotiated; `recover` insists on the same.
    public private(set) var attachedFeatures: FeatureSet = []
    let queues: UnsafeMutablePointer<BlockQueue<T>>
    private var nextTag: UInt64 = 1
    private var idBuffer: DMARegion?
    /// What attach was asked for, so `recover` can do it again.
    private let attachOptions: BlockAttachOptions
    /// The draft statistics queue, when negotiated (post with `startStatistics`, answer with `pollStatistics`).
    public private(set) var stats: StatsQueueResponder<T>?

    /// Negotiates features, reads and checks the config, sets up queues and sets DRIVER_OK.
    /// On failure the device is left with FAILED set (or reset), never half-running.
    public init(transport: T, options: BlockAttachOptions = BlockAttachOptions(),
                logger: Logger = Logger(label: "virtio.blk")) throws(BlockError) {
        let device = VirtioDevice(transport: transport, logger: logger)
        self.device = device
        guard transport.deviceType == .block else {
            throw .wrongDeviceType("\(transport.name) is a virtio \(transport.deviceTypeName) device, not a block device")
        }
        timeoutMilliseconds = options.timeoutMilliseconds
        attachOptions = options
        let built: (BlockConfig, Int, UnsafeMutablePointer<BlockQueue<T>>)
        do {
            var bits = blockDriverFeatures
            if options.draftStatsQueue { bits.insert(BlockFeature.draftStatsVQ) }
            attachedFeatures = try device.initialize(policy: options.policy, deviceTypeBits: bits)
            let config = try BlockConfig.read(from: device)
            let available = min(Int(config.numQueues), try device.transport.numQueues())
            var wanted = options.queues ?? available
            guard wanted >= 1, wanted <= available else {
                throw BlockError.queueCount(asked: wanted, available: available)
            }
            if options.interrupts {
                // One vector per queue plus config: a shared vector would let one queue's waiter
                // swallow another's wake-up. Use what the table allows unless told otherwise.
                let table = transport.interruptVectors
                guard table >= 2 else {
                    throw BlockError.invalidRequest("\(transport.name) has \(table) MSI-X vector(s); interrupt mode needs at least 2 (use poll mode)")
                }
                if options.queues == nil { wanted = min(wanted, table - 1) }
                guard wanted <= table - 1 else {
                    throw BlockError.invalidRequest("\(wanted) queues in interrupt mode need \(wanted + 1) MSI-X vectors and \(transport.name) has \(table); use --queues \(table - 1) or poll mode")
                }
            }
            let f = device.negotiated
            let limits = BlockLimits(
                capacitySectors: config.capacitySectors, blockSize: config.blockSize,
                // seg_max is the device's word: bounded so a table of header + data + segment + status fits 256.
                sizeMax: config.sizeMax ?? UInt32.max & ~511, segMax: Int(min(config.segMax ?? 1, 253)),
                readOnly: f.contains(BlockFeature.readOnly), flush: f.contains(BlockFeature.flush),
                discard: f.contains(BlockFeature.discard), writeZeroes: f.contains(BlockFeature.writeZeroes),
                // 0 means no limit stated (as Linux reads it).
                maxDiscardSectors: config.maxDiscardSectors.map { $0 == 0 ? .max : $0 } ?? 0,
                maxWriteZeroesSectors: config.maxWriteZeroesSectors.map { $0 == 0 ? .max : $0 } ?? 0)
            let eventFDs = options.interrupts ? try Self.enableInterrupts(transport, queues: wanted, logger: logger) : []
            let queues = UnsafeMutablePointer<BlockQueue<T>>.allocate(capacity: wanted)
            var made = 0
            do throws(BlockError) {
                for i in 0..<wanted {
                    let vq: Virtqueue<T>
                    let vector = eventFDs.isEmpty ? nil : UInt16(1 + i)
                    do {
                        // header + data segments + segment + status fit one indirect table.
                        vq = try device.makeQueue(i, size: options.queueSize, indirectElements: min(limits.segMax + 3, 256),
                                                  vector: vector)
                    } catch { throw BlockError.virtio(error) }
                    (queues + i).initialize(to: try BlockQueue(virtqueue: vq, limits: limits, dma: transport.dma))
                    if let granted = queues[i].virtqueue.vector { queues[i].interruptFD = eventFDs[Int(granted)] }
                    made += 1
                }
                do {
                    // The draft statistics queue follows the device's request queues.
                    if device.has(BlockFeature.draftStatsVQ) {
                        stats = try StatsQueueResponder(device: device, queueIndex: Int(config.numQueues), capacity: 16)
                    }
                    try device.driverOK()
                } catch { throw BlockError.virtio(error) }
            } catch {
                queues.deinitialize(count: made)
                queues.deallocate()
                throw error
            }
            built = (config, wanted, queues)
        } catch let e as BlockError {
            device.fail()
            transport.disableInterrupts()
            throw e
        } catch let e as VirtioError {
            device.fail()
            transport.disableInterrupts()
            throw .virtio(e)
        } catch {
            device.fail()
            transport.disableInterrupts()
            throw .invalidRequest("\(error)")
        }
        (config, queueCount, queues) = built
    }

    /// Recovery after DEVICE_NEEDS_RESET, a broken queue or a timeout: resets the device, negotiates
    /// the same features again, sets every queue up again in its own ring memory and sets
    /// DRIVER_OK. Returns the tags of the requests that were in flight: the device will never
    /// complete them, so the caller resubmits each (nothing is lost; none completes twice).
    /// Poll mode only for now.
    public func recover() throws(BlockError) -> [UInt64] {
        guard !interruptMode else { throw .invalidRequest("recovery in MSI-X mode is not supported yet; attach in poll mode") }
        // What attach negotiated: a failed request may have reset the device already (and cleared its set).
        let before = attachedFeatures
        var bits = blockDriverFeatures
        if attachOptions.draftStatsQueue { bits.insert(BlockFeature.draftStatsVQ) }
        var lost: [UInt64] = []
        do {
            try device.initialize(policy: attachOptions.policy, deviceTypeBits: bits)
            guard device.negotiated == before else {
                device.fail()
                throw BlockError.invalidConfig("the device negotiated different features after its reset: "
                    + device.names(device.negotiated.subtracting(before).union(before.subtracting(device.negotiated))).joined(separator: ", "))
            }
            for i in 0..<queueCount {
                let fresh = try device.makeQueue(i, size: queues[i].virtqueue.size, reusing: queues[i].virtqueue.ringMemory)
                lost += queues[i].restart(with: fresh)
            }
            if stats != nil {
                stats = try StatsQueueResponder(device: device, queueIndex: Int(config.numQueues), capacity: 16)
            }
            try device.driverOK()
            try stats?.post(statEntries())
        } catch let e as BlockError {
            throw e
        } catch let e as VirtioError {
            device.fail()
            throw .virtio(e)
        } catch {
            throw .invalidRequest("\(error)")
        }
        return lost
    }

    /// Turns per-request accounting (seed 000 counters, latency histogram) on or off on every queue.
    public func setAccounting(_ on: Bool) {
        for i in 0..<queueCount { queues[i].accounting = on }
    }

    /// One queue's I/O counters.
    public func io(queue: Int) -> BlockIOCounters {
        precondition(queue >= 0 && queue < queueCount, "queue \(queue) out of range")
        return queues[queue].io
    }

    /// The I/O counters of every queue, summed (histograms bucket by bucket).
    public var ioCounters: BlockIOCounters {
        var t = BlockIOCounters()
        for i in 0..<queueCount {
            let c = queues[i].io
            t.readIOs &+= c.readIOs; t.readSectors &+= c.readSectors; t.readNanoseconds &+= c.readNanoseconds
            t.writeIOs &+= c.writeIOs; t.writeSectors &+= c.writeSectors; t.writeNanoseconds &+= c.writeNanoseconds
            t.otherIOs &+= c.otherIOs; t.inFlight &+= UInt64(queues[i].inFlight); t.errors &+= c.errors
            t.busyNanoseconds = max(t.busyNanoseconds, c.busyNanoseconds)
            t.weightedNanoseconds &+= c.weightedNanoseconds
            for b in 0..<LatencyBuckets.count { t.latency.storage[b] &+= c.latency[b] }
        }
        return t
    }

    /// Seed 000's statistics, tags READ_IO (0) ... TIME_IN_QUEUE (10); ticks in milliseconds.
    public func statEntries() -> [StatEntry] {
        let c = ioCounters
        let values: [UInt64] = [c.readIOs, 0, c.readSectors, c.readNanoseconds / 1_000_000, c.writeIOs, 0, c.writeSectors,
                                c.writeNanoseconds / 1_000_000, c.inFlight, c.busyNanoseconds / 1_000_000,
                                c.weightedNanoseconds / 1_000_000]
        return values.enumerated().map { StatEntry(tag: UInt16($0.offset), value: $0.element) }
    }

    /// Posts the first statistics buffer (the draft's initialisation step).
    public func startStatistics() throws(BlockError) {
        do { try stats?.post(statEntries()) } catch { throw .virtio(error) }
    }

    /// Answers the device's statistics request, if it made one.
    @discardableResult
    public func pollStatistics() throws(BlockError) -> Bool {
        guard let stats else { return false }
        do { return try stats.poll { statEntries() } } catch { throw .virtio(error) }
    }

    /// Resets the device (queues stop, nothing is left running), then frees the queues.
    deinit {
        try? device.reset()
        device.transport.disableInterrupts()
        queues.deinitialize(count: queueCount)
        queues.deallocate()
    }

    /// MSI-X: vector 0 for configuration changes, 1... for queues (as Linux lays them out).
    static func enableInterrupts(_ transport: T, queues: Int, logger: Logger) throws(BlockError) -> [Int32] {
        let fds: [Int32]
        do { fds = try transport.enableInterrupts(count: queues + 1) } catch { throw .virtio(error) }
        do {
            if try transport.setConfigVector(0) == nil {
                logger.warning("config-change vector refused; configuration changes are not signalled")
            }
        } catch { throw .virtio(error) }
        return fds
    }

    /// Whether queues sleep on MSI-X eventfds (false: poll mode).
    public var interruptMode: Bool { queues[0].interruptFD >= 0 }

    public var capacityBytes: UInt64 { config.capacityBytes }
    /// The most bytes one data descriptor carries (size_max, or the driver's own bound).
    public var maxSegmentBytes: Int { Int(queues[0].limits.sizeMax) }
    public var negotiated: FeatureSet { device.negotiated }

    /// Runs `body` with exclusive access to queue `index`.
    public func withQueue<R, E: Error>(_ index: Int, _ body: (inout BlockQueue<T>) throws(E) -> R) throws(E) -> R {
        precondition(index >= 0 && index < queueCount, "queue \(index) out of range")
        return try body(&queues[index])
    }

    /// An unsafe pointer to queue `index`, for a thread that owns the queue for a while (benchmarks).
    public func queuePointer(_ index: Int) -> UnsafeMutablePointer<BlockQueue<T>> {
        precondition(index >= 0 && index < queueCount, "queue \(index) out of range")
        return queues + index
    }

    /// VIRTIO_F_RING_RESET: resets queue `index` and sets it up again. Requests in flight on it
    /// are dropped (returns how many); the device never completes them.
    @discardableResult
    public func resetQueue(_ index: Int) throws(BlockError) -> Int {
        guard index >= 0, index < queueCount else { throw .noSuchQueue(index, available: queueCount) }
        guard device.has(VirtioFeature.ringReset) else { throw .virtio(.featureNotNegotiated("VIRTIO_F_RING_RESET")) }
        let dropped = queues[index].inFlight
        do { try device.resetQueue(&queues[index].virtqueue) } catch {
            device.fail()  // the queue is in no known state: stop the device rather than guess
            throw .queueResetFailed(queue: index, error)
        }
        queues[index].forgetInFlight()
        return dropped
    }

    /// Per-queue counters.
    public func counters(queue: Int) -> QueueCounters {
        precondition(queue >= 0 && queue < queueCount, "queue \(queue) out of range")
        return queues[queue].virtqueue.counters
    }

    /// DMA memory for data buffers.
    public func allocateBuffer(bytes: Int) throws(BlockError) -> DMARegion {
        do { return try device.transport.dma.allocate(length: bytes, alignment: 4096) } catch {
            throw .virtio(.dma(error))
        }
    }

    // MARK: synchronous helpers (queue 0)

    /// Submits one request on `queue`, notifies, and polls until it completes (or the timeout).
    /// When the device broke a rule, stopped answering, needs a reset or is gone, the device is
    /// reset before the error is thrown: it then writes no memory the caller may reuse.
    public func perform(_ op: BlockOperation, sector: UInt64, data: BufferElement?, queue: Int = 0) throws(BlockError) -> BlockCompletion {
        do { return try performOnce(op, sector: sector, data: data, queue: queue) } catch {
            switch error {
            case .virtio, .timeout: try? device.reset()
            default: break
            }
            throw error
        }
    }

    private func performOnce(_ op: BlockOperation, sector: UInt64, data: BufferElement?, queue: Int) throws(BlockError) -> BlockCompletion {
        guard queue >= 0, queue < queueCount else { throw .noSuchQueue(queue, available: queueCount) }
        let tag = nextTag
        nextTag &+= 1
        let q = queues + queue
        try q.pointee.submit(op, sector: sector, data: data, tag: tag)
        q.pointee.kick()
        var deadline = PollDeadline(milliseconds: timeoutMilliseconds)
        while true {
            if let c = try q.pointee.poll() {
                guard c.tag == tag else { continue }  // only one in flight from here; anything else is stale
                return c
            }
            var slept = false
            if q.pointee.interruptFD >= 0 {
                q.pointee.waitForInterrupt(timeoutMilliseconds: 100)
                slept = true  // asleep, not spinning: check health and time on every wake
            }
            let expired = try deadline.expired(afterSleep: slept) { () throws(BlockError) in
                do throws(VirtioError) { try device.checkHealth() } catch { throw .virtio(error) }
            }
            if expired {
                var what = "\(op) at sector \(sector) on queue \(queue) of \(device.transport.name)"
                if let n = device.transport.notifyFailure { what += " (\(n))" }
                throw .timeout(milliseconds: timeoutMilliseconds, what: what)
            }
        }
    }

    /// Turns a completion into success or the error it reports.
    func check(_ c: BlockCompletion, _ what: String, sector: UInt64) throws(BlockError) {
        switch c.result {
        case .ok: return
        case .ioError: throw .ioError(sector: sector)
        case .unsupported: throw .deviceUnsupported(what)
        case let .protocolError(e): throw e
        }
    }

    /// The most bytes one request of the synchronous helpers carries; bigger buffers go as
    /// several requests (as Linux's max_sectors_kb does: a device maps each request into a
    /// bounded iovec, QEMU's into at most 1024 pieces).
    public static var maxRequestBytes: Int { 1 << 20 }

    public func read(sector: UInt64, into buffer: DMARegion) throws(BlockError) {
        try transfer(.read, sector: sector, buffer)
    }

    public func write(sector: UInt64, from buffer: DMARegion) throws(BlockError) {
        try transfer(.write, sector: sector, buffer)
    }

    func transfer(_ op: BlockOperation, sector: UInt64, _ buffer: DMARegion) throws(BlockError) {
        var offset = 0
        repeat {
            let n = min(Self.maxRequestBytes, buffer.length - offset)
            let at = sector + UInt64(offset / 512)
            let c = try perform(op, sector: at, data: BufferElement(address: buffer.deviceAddress + UInt64(offset), length: UInt32(n)))
            try check(c, op == .read ? "read" : "write", sector: at)
            offset += n
        } while offset < buffer.length
    }

    public func flush() throws(BlockError) {
        try check(try perform(.flush, sector: 0, data: nil), "flush", sector: 0)
    }

    public func discard(sector: UInt64, sectors: UInt32) throws(BlockError) {
        try check(try perform(.discard(sectors: sectors), sector: sector, data: nil), "discard", sector: sector)
    }

    public func writeZeroes(sector: UInt64, sectors: UInt32, unmap: Bool = false) throws(BlockError) {
        try check(try perform(.writeZeroes(sectors: sectors, unmap: unmap), sector: sector, data: nil), "write-zeroes", sector: sector)
    }

    /// GET_ID: the device's serial (up to 20 bytes, NUL-padded).
    public func serial() throws(BlockError) -> String {
        let buffer: DMARegion
        if let idBuffer { buffer = idBuffer } else { buffer = try allocateBuffer(bytes: 20) }
        idBuffer = buffer
        let c = try perform(.getID, sector: 0, data: BufferElement(address: buffer.deviceAddress, length: 20))
        try check(c, "GET_ID", sector: 0)
        let bytes = UnsafeRawBufferPointer(start: buffer.pointer, count: 20).prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}
