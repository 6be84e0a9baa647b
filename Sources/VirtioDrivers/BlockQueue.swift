import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// A block request.
@frozen
public enum BlockOperation: Sendable, Equatable {
    case read, write, flush, getID
    case discard(sectors: UInt32)
    case writeZeroes(sectors: UInt32, unmap: Bool)

    /// Pattern matches, not the derived `==` (not inlinable across modules: a call per request).
    @inlinable var isRead: Bool { if case .read = self { true } else { false } }
    @inlinable var isWrite: Bool { if case .write = self { true } else { false } }

    @inlinable var requestType: UInt32 {
        switch self {
        case .read: BlockRequestType.read
        case .write: BlockRequestType.write
        case .flush: BlockRequestType.flush
        case .getID: BlockRequestType.getID
        case .discard: BlockRequestType.discard
        case .writeZeroes: BlockRequestType.writeZeroes
        }
    }
}

/// How a request ended.
@frozen
public enum BlockResult: Sendable, Equatable {
    case ok
    /// VIRTIO_BLK_S_IOERR.
    case ioError
    /// VIRTIO_BLK_S_UNSUPP.
    case unsupported
    /// The device broke the protocol: an unknown status byte, or none written.
    case protocolError(BlockError)
}

/// A finished request: the caller's tag, the result, and the bytes the device reported writing.
@frozen
public struct BlockCompletion: Sendable, Equatable {
    public let tag: UInt64
    public let result: BlockResult
    public let usedLength: UInt32
    @inlinable
    public init(tag: UInt64, result: BlockResult, usedLength: UInt32) {
        self.tag = tag
        self.result = result
        self.usedLength = usedLength
    }
}

/// Seed 000's block statistics (the fields of Linux's /sys/block/X/stat), a latency histogram,
/// and errors, kept per queue by the driver.
@frozen
public struct BlockIOCounters: Sendable, Equatable {
    public var readIOs: UInt64 = 0, readSectors: UInt64 = 0, readNanoseconds: UInt64 = 0
    public var writeIOs: UInt64 = 0, writeSectors: UInt64 = 0, writeNanoseconds: UInt64 = 0
    public var otherIOs: UInt64 = 0
    public var inFlight: UInt64 = 0
    /// Time with at least one request in flight, and in-flight-weighted time (Linux io_ticks, time_in_queue).
    public var busyNanoseconds: UInt64 = 0, weightedNanoseconds: UInt64 = 0
    public var errors: UInt64 = 0
    /// log2 latency buckets: bucket 0 holds 0 ns, bucket i holds [2^(i-1), 2^i) ns (KVM's LOG_HIST).
    public var latency = LatencyBuckets()
    @usableFromInline var last: UInt64 = 0
    public init() {}

    @inlinable mutating func advance(to now: UInt64, inFlight: Int) {
        if last != 0, inFlight > 0, now > last {
            busyNanoseconds &+= now &- last
            weightedNanoseconds &+= (now &- last) &* UInt64(inFlight)
        }
        last = now
    }

    @inlinable mutating func complete(sectors: Int64, nanoseconds: UInt64, ok: Bool) {
        if sectors > 0 {
            readIOs &+= 1; readSectors &+= UInt64(sectors); readNanoseconds &+= nanoseconds
        } else if sectors < 0 {
            writeIOs &+= 1; writeSectors &+= UInt64(-sectors); writeNanoseconds &+= nanoseconds
        } else {
            otherIOs &+= 1
        }
        if !ok { errors &+= 1 }
        latency.record(nanoseconds)
    }
}

/// 40 log2 buckets without an array (no allocation on the hot path).
@frozen
public struct LatencyBuckets: Sendable, Equatable {
    public static let count = 40
    @usableFromInline var storage: InlineArray<40, UInt64> = .init(repeating: 0)
    public init() {}
    @inlinable mutating func record(_ ns: UInt64) {
        let b = min(Self.count - 1, UInt64.bitWidth - ns.leadingZeroBitCount)
        storage[b] &+= 1
    }
    public subscript(i: Int) -> UInt64 { storage[i] }
    public static func == (a: Self, b: Self) -> Bool { (0..<count).allSatisfy { a.storage[$0] == b.storage[$0] } }
}

/// What a queue needs to know about the device to check requests before they go out.
@usableFromInline
struct BlockLimits: Sendable {
    @usableFromInline let capacitySectors: UInt64
    @usableFromInline let blockSize: UInt32
    @usableFromInline let sizeMax: UInt32
    @usableFromInline let segMax: Int
    @usableFromInline let readOnly: Bool
    @usableFromInline let flush: Bool
    @usableFromInline let discard: Bool
    @usableFromInline let writeZeroes: Bool
    @usableFromInline let maxDiscardSectors: UInt32
    @usableFromInline let maxWriteZeroesSectors: UInt32
}

/// One request queue of a block device: per-request header and status in DMA memory, requests
/// tracked by ring token. Owned by one thread; submit, kick and poll allocate nothing.
public struct BlockQueue<T: VirtioTransport>: ~Copyable {
    public var virtqueue: Virtqueue<T>
    @usableFromInline let limits: BlockLimits
    /// 64 bytes per slot: header at 0, status at 16, one discard/write-zeroes segment at 32.
    @usableFromInline let slots: DMARegion
    @usableFromInline let slotCount: Int
    @usableFromInline let freeSlots: UnsafeMutablePointer<UInt16>
    @usableFromInline var freeCount: Int
    @usableFromInline let tokenSlot: UnsafeMutablePointer<UInt16>
    @usableFromInline let slotTag: UnsafeMutablePointer<UInt64>
    @usableFromInline let scratch: UnsafeMutablePointer<BufferElement>
    @usableFromInline let scratchCapacity: Int
    /// Data segments one request may use on this queue.
    @usableFromInline let segLimit: Int
    /// The eventfd of this queue's MSI-X vector, or -1 in poll mode.
    public internal(set) var interruptFD: Int32 = -1
    /// Per-request timing and the seed 000 block statistics; off until `accounting` is set
    /// (then each submit and completion reads the monotonic clock once).
    public var accounting = false
    public var io = BlockIOCounters()
    @usableFromInline let slotStart: UnsafeMutablePointer<UInt64>
    /// Sectors of the request in a slot, negative for a write, 0 for anything else.
    @usableFromInline let slotSectors: UnsafeMutablePointer<Int64>

    init(virtqueue: consuming Virtqueue<T>, limits: BlockLimits, dma: any DMAAllocator) throws(BlockError) {
        let n = virtqueue.size
        let indirect = virtqueue.features.indirect
        self.virtqueue = virtqueue
        self.limits = limits
        do { slots = try dma.allocate(length: n * 64, alignment: 64) } catch {
            throw .virtio(.dma(error))
        }
        slotCount = n
        freeSlots = .allocate(capacity: n)
        freeCount = Self.stackAllSlots(freeSlots, count: n)
        tokenSlot = .allocate(capacity: n)
        tokenSlot.initialize(repeating: 0, count: n)
        slotTag = .allocate(capacity: n)
        slotTag.initialize(repeating: 0, count: n)
        // Without indirect tables a request's chain must fit the ring: header and status plus data.
        segLimit = indirect ? limits.segMax : max(1, min(limits.segMax, n - 3))
        scratchCapacity = limits.segMax + 3
        scratch = .allocate(capacity: scratchCapacity)
        slotStart = .allocate(capacity: n)
        slotStart.initialize(repeating: 0, count: n)
        slotSectors = .allocate(capacity: n)
        slotSectors.initialize(repeating: 0, count: n)
    }

    deinit {
        slotStart.deallocate()
        slotSectors.deallocate()
        freeSlots.deallocate()
        tokenSlot.deallocate()
        slotTag.deallocate()
        scratch.deallocate()
    }

    /// After a device reset: runs on `fresh` (the same ring memory, set up again) and returns the
    /// tags of the requests that were in flight; the device never completes them, so the caller resubmits.
    mutating func restart(with fresh: consuming Virtqueue<T>) -> [UInt64] {
        var free = Set<UInt16>()
        for i in 0..<freeCount { free.insert(freeSlots[i]) }
        let lost = (0..<slotCount).filter { !free.contains(UInt16($0)) }.map { slotTag[$0] }
        virtqueue = fresh
        forgetInFlight()
        return lost
    }

    /// After a queue reset: every request in flight is gone; their slots are free again.
    mutating func forgetInFlight() {
        freeCount = Self.stackAllSlots(freeSlots, count: slotCount)
    }

    /// Puts every slot on the free stack (slot 0 on top); returns how many are free.
    private static func stackAllSlots(_ stack: UnsafeMutablePointer<UInt16>, count: Int) -> Int {
        for i in 0..<count { stack[i] = UInt16(count - 1 - i) }
        return count
    }

    /// Interrupt mode: re-arms used-buffer notifications and sleeps until the queue's eventfd
    /// fires or `timeoutMilliseconds` pass. Returns at once when used buffers are already
    /// pending (the re-check after enabling, spec 2.7.10 / 2.8.21.3). Poll mode: returns at once.
    public mutating func waitForInterrupt(timeoutMilliseconds: Int32) {
        guard interruptFD >= 0 else { return }
        if virtqueue.enableUsedNotifications() { return }
        var p = pollfd(fd: interruptFD, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&p, 1, timeoutMilliseconds) == 1 else { return }
        var count: UInt64 = 0
        if read(interruptFD, &count, 8) == 8 { virtqueue.counters.interrupts &+= count }
    }

    /// Requests submitted and not yet completed.
    public var inFlight: Int { slotCount - freeCount }
    /// How many more requests can be submitted right now (each may need several descriptors).
    public var slotsFree: Int { freeCount }
    /// Requests with one data segment that fit right now: one descriptor each with indirect tables,
    /// three (header, data, status) without.
    public var singleSegmentRequestsFree: Int {
        min(freeCount, virtqueue.freeDescriptors / (virtqueue.features.indirect ? 1 : 3))
    }

    /// Checks a request against the device before anything is written.
    @inlinable
    func validate(_ op: BlockOperation, sector: UInt64, length: Int) throws(BlockError) {
        func range(_ sectors: UInt64) throws(BlockError) {
            let (end, o) = sector.addingReportingOverflow(sectors)
            guard !o, end <= limits.capacitySectors else {
                throw .outOfRange(sector: sector, sectors: sectors, capacity: limits.capacitySectors)
            }
            // blk_size is a power of two (checked at attach): masks, not divisions, per request.
            let perBlock = UInt64(limits.blockSize / 512)
            guard sector & (perBlock &- 1) == 0 else { throw .misaligned(what: "sector", value: sector, blockSize: limits.blockSize) }
        }
        switch op {
        case .read, .write:
            if op.isWrite, limits.readOnly { throw .readOnly }
            guard length > 0 else { throw .invalidRequest("a \(op) needs a data buffer") }
            guard length & (Int(limits.blockSize) &- 1) == 0 else {
                throw .misaligned(what: "length", value: UInt64(length), blockSize: limits.blockSize)
            }
            try range(UInt64(length / 512))
        case .flush:
            guard limits.flush else { throw .notSupported("VIRTIO_BLK_F_FLUSH (flush)") }
        case .getID:
            // virtio-blk "Device Operation": the GET_ID data is exactly 20 bytes.
            guard length == 20 else { throw .invalidRequest("GET_ID takes a buffer of exactly 20 bytes, got \(length)") }
        case let .discard(n):
            guard limits.discard else { throw .notSupported("VIRTIO_BLK_F_DISCARD (discard)") }
            if limits.readOnly { throw .readOnly }
            guard n > 0, n <= limits.maxDiscardSectors else {
                throw .invalidRequest("discard of \(n) sectors; the device takes 1...\(limits.maxDiscardSectors)")
            }
            try range(UInt64(n))
        case let .writeZeroes(n, _):
            guard limits.writeZeroes else { throw .notSupported("VIRTIO_BLK_F_WRITE_ZEROES (write-zeroes)") }
            if limits.readOnly { throw .readOnly }
            guard n > 0, n <= limits.maxWriteZeroesSectors else {
                throw .invalidRequest("write-zeroes of \(n) sectors; the device takes 1...\(limits.maxWriteZeroesSectors)")
            }
            try range(UInt64(n))
        }
    }

    /// Queues a request. `data` is DMA memory: the destination of a read or GET_ID, the source of a
    /// write (none for flush, discard and write-zeroes). Call `kick()` after one or more submits.
    @inlinable
    public mutating func submit(_ op: BlockOperation, sector: UInt64, data: BufferElement?,
                                tag: UInt64) throws(BlockError) {
        let length = Int(data?.length ?? 0)
        try validate(op, sector: sector, length: length)
        guard freeCount > 0 else { throw .queueFull }
        let slot = freeSlots[freeCount &- 1]
        let base = slots.pointer + Int(slot) &* 64
        let baseAddress = slots.deviceAddress &+ UInt64(Int(slot) &* 64)
        BlockRequestHeader(type: op.requestType, sector: op.isRead || op.isWrite ? sector : 0).store(to: base)
        // Slot layout: header at 0, status byte at 16, discard/write-zeroes segment at 32.
        // A status the device never writes stays notWritten and is caught.
        base.storeBytes(of: BlockStatusByte.notWritten, toByteOffset: 16, as: UInt8.self)

        var count = 0
        scratch[0] = BufferElement(address: baseAddress, length: UInt32(BlockRequestHeader.size))
        count = 1
        var readable = 1
        switch op {
        case .read, .write, .getID:
            let d = data!
            // Split the data into pieces no longer than size_max.
            var offset: UInt32 = 0
            let piece = limits.sizeMax
            while offset < d.length {
                guard count &- 1 < segLimit, count < scratchCapacity &- 1 else {
                    throw .tooManySegments(needed: (Int(d.length) + Int(piece) - 1) / Int(piece), maximum: segLimit)
                }
                let n = min(piece, d.length &- offset)
                scratch[count] = BufferElement(address: d.address &+ UInt64(offset), length: n)
                count &+= 1
                offset &+= n
            }
            if op.isWrite { readable = count }
        case let .discard(n), let .writeZeroes(n, _):
            var flags: UInt32 = 0
            if case let .writeZeroes(_, unmap) = op, unmap { flags = BlockDiscardSegment.unmap }
            BlockDiscardSegment(sector: sector, sectors: n, flags: flags).store(to: base + 32)
            scratch[count] = BufferElement(address: baseAddress &+ 32, length: UInt32(BlockDiscardSegment.size))
            count &+= 1
            readable = count
        case .flush:
            break
        }
        scratch[count] = BufferElement(address: baseAddress &+ 16, length: 1)
        count &+= 1
        let all = UnsafeBufferPointer(start: scratch, count: count)
        let token: UInt16
        do {
            token = try virtqueue.add(readable: UnsafeBufferPointer(rebasing: all[0..<readable]).span,
                                      writable: UnsafeBufferPointer(rebasing: all[readable..<count]).span)
        } catch {
            if error == .full { throw .queueFull }
            throw .virtio(.ring(queue: virtqueue.index, error))
        }
        freeCount &-= 1
        tokenSlot[Int(token)] = slot
        slotTag[Int(slot)] = tag
        if accounting {
            let now = monotonicNanoseconds()
            io.advance(to: now, inFlight: inFlight &- 1)
            slotStart[Int(slot)] = now
            let sectors = Int64(length / 512)
            slotSectors[Int(slot)] = op.isRead ? sectors : op.isWrite ? -sectors : 0
        }
    }

    /// Tells the device about submitted requests (unless it suppressed notifications).
    @inlinable
    public mutating func kick() { virtqueue.kick() }

    /// The next completed request, or nil. Throws only when the device broke the ring protocol
    /// (the queue is then broken and every later call throws).
    @inlinable
    public mutating func poll() throws(BlockError) -> BlockCompletion? {
        let used: UsedBuffer?
        do { used = try virtqueue.pollUsed() } catch { throw .virtio(.ring(queue: virtqueue.index, error)) }
        guard let used else { return nil }
        let slot = tokenSlot[Int(used.token)]
        let status = (slots.pointer + Int(slot) &* 64 + 16).load(as: UInt8.self)
        let result: BlockResult
        if used.length == 0 {
            result = .protocolError(.statusNotWritten(usedLength: 0))
        } else {
            switch status {
            case BlockStatusByte.ok: result = .ok
            case BlockStatusByte.ioError: result = .ioError
            case BlockStatusByte.unsupported: result = .unsupported
            case BlockStatusByte.notWritten: result = .protocolError(.statusNotWritten(usedLength: used.length))
            default: result = .protocolError(.invalidStatus(status))
            }
        }
        let tag = slotTag[Int(slot)]
        if accounting {
            let now = monotonicNanoseconds()
            io.advance(to: now, inFlight: inFlight)
            io.complete(sectors: slotSectors[Int(slot)], nanoseconds: now &- slotStart[Int(slot)], ok: result == .ok)
        }
        freeSlots[freeCount] = slot
        freeCount &+= 1
        return BlockCompletion(tag: tag, result: result, usedLength: used.length)
    }
}
