import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// The largest packet a merged receive may carry: 65550 bytes of frame plus the header (net.tex
/// "Setting Up Receive Buffers", spec 1.2's 65562).
public let netMaxMergedBytes = 65562

/// A receive queue: fixed-size DMA buffers, one descriptor each, posted so the ring stays full.
/// `receive(into:)` lends a burst of frames until the next call, then posts their buffers again;
/// it allocates nothing and decides on one notification per burst.
public struct NetRxQueue<T: VirtioTransport>: ~Copyable {
    public var virtqueue: Virtqueue<T>
    /// Index of this queue among the receive queues (rx N is virtqueue 2N).
    public let pair: Int
    public let bufferSize: Int
    public let mergeable: Bool
    /// GUEST_CSUM: NEEDS_CSUM / DATA_VALID may come with frames.
    @usableFromInline let checksumFlagsAllowed: Bool
    /// The most buffers one merged frame may take (H4), and its byte limit (H6).
    public let mergeLimit: Int
    @usableFromInline let buffers: DMARegion
    @usableFromInline let slotCount: Int
    @usableFromInline let free: UnsafeMutablePointer<UInt16>
    @usableFromInline var freeCount: Int
    /// The free slots are a FIFO (`free[freeHead...]`, wrapping), not a stack: a slot goes back to
    /// the device only after every other free slot has, so its lines have left this core's cache
    /// by then. Reposting the slot just read (LIFO) made the vhost core's header access pull the
    /// line from this core every frame (perf on the DPDK vhost: 19% at its num_buffers check).
    @usableFromInline var freeHead = 0
    @usableFromInline let lent: UnsafeMutablePointer<UInt16>
    @usableFromInline var lentCount = 0
    @usableFromInline let tokenSlot: UnsafeMutablePointer<UInt16>
    @usableFromInline let stage: PostBurst
    public var stats = NetQueueStats()
    /// The rule the device broke on this queue; once set, nothing more is received.
    public internal(set) var violation: NetViolation?
    /// The last rule a frame broke that did not break the queue: the frame was dropped (and
    /// counted in errors), or the fields it should not have set were ignored (P1).
    public internal(set) var lastFault: NetViolation?
    /// The eventfd of this queue's MSI-X vector, or -1 in poll mode.
    public internal(set) var interruptFD: Int32 = -1

    init(virtqueue: consuming Virtqueue<T>, pair: Int, bufferSize: Int, mergeable: Bool, checksumFlags: Bool,
         dma: any DMAAllocator) throws(NetError) {
        let n = virtqueue.size
        self.virtqueue = virtqueue
        self.pair = pair
        self.bufferSize = bufferSize
        self.mergeable = mergeable
        checksumFlagsAllowed = checksumFlags
        // Merged frames: at most the ring, and never more buffers than the largest packet needs (H4).
        mergeLimit = mergeable ? min(n, (netMaxMergedBytes + bufferSize - 1) / bufferSize + 1) : 1
        // Twice the ring: a full ring stays posted while a burst's worth of buffers is lent out.
        slotCount = 2 * n
        do { buffers = try dma.allocate(length: slotCount * bufferSize, alignment: 4096) } catch {
            throw .virtio(.dma(error))
        }
        free = .allocate(capacity: slotCount)
        for i in 0..<slotCount { free[i] = UInt16(slotCount - 1 - i) }
        freeCount = slotCount
        lent = .allocate(capacity: slotCount)
        tokenSlot = .allocate(capacity: n)
        tokenSlot.initialize(repeating: 0, count: n)
        stage = PostBurst(capacity: n)
    }

    deinit {
        free.deallocate()
        lent.deallocate()
        tokenSlot.deallocate()
    }

    /// The receive buffers, all slots (a fuzzer's or a test's view of where frames may lie).
    public var bufferArea: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: buffers.pointer, count: slotCount * bufferSize) }

    /// The buffer slots lent with the last burst, frames dropped on the way included (they go back
    /// to the device on the next receive).
    public var lentSlots: UnsafeBufferPointer<UInt16> { UnsafeBufferPointer(start: lent, count: lentCount) }

    /// Room for bursts of up to `capacity` frames from this queue.
    public func makeBurst(capacity: Int) -> NetRxBurst { NetRxBurst(capacity: capacity, mergeLimit: mergeLimit) }

    /// Posts free buffers until the ring is full, then notifies if the device asks (QEMU stalls
    /// receive for good unless a driver that ran dry notifies after refilling: digest §4).
    @inlinable
    public mutating func refill() throws(NetError) {
        let room = min(freeCount, virtqueue.freeDescriptors)
        guard room > 0 else { return }
        for i in 0..<room {
            let slot = free[freeIndex(i)]
            stage.stage(BufferElement(address: buffers.deviceAddress &+ UInt64(Int(slot) &* bufferSize),
                                      length: UInt32(bufferSize)), slot: slot, at: i)
        }
        // One burst, one avail-idx store, one notification decision (as DPDK's rx refill).
        let posted: Int
        do { posted = try stage.post(room, to: &virtqueue, deviceWritable: true, tokenSlot: tokenSlot) } catch {
            throw .ring(virtqueue.index, error)
        }
        freeCount &-= posted
        freeHead = freeIndex(posted)
        if posted > 0 {
            stats.refills &+= UInt64(posted)
            virtqueue.kick()
        }
    }

    /// Where the free FIFO's `k`th entry from its head lies (k <= slotCount).
    @inlinable @inline(__always)
    func freeIndex(_ k: Int) -> Int {
        let at = freeHead &+ k
        return at >= slotCount ? at &- slotCount : at
    }

    /// Takes back the buffers lent with the last burst.
    @inlinable
    mutating func recycle() {
        for i in 0..<lentCount {
            free[freeIndex(freeCount)] = lent[i]
            freeCount &+= 1
        }
        lentCount = 0
    }

    @inlinable
    func pointer(_ slot: UInt16) -> UnsafeMutableRawPointer { buffers.pointer + Int(slot) &* bufferSize }

    /// Receives up to `burst.capacity` frames: the previous burst's buffers go back to the device,
    /// then used buffers are checked (digest §10 H2-H7) and lent to the caller, then the ring is
    /// refilled (unless `refilling` is false: a drain at the end, so the peer can fill no more than
    /// it was given). Throws when the device broke a rule; the queue is then broken for good.
    @inlinable
    public mutating func receive(into burst: inout NetRxBurst, refilling: Bool = true) throws(NetError) -> Int {
        if let violation {
            burst.filled = 0
            throw .violation(violation)
        }
        recycle()
        burst.filled = 0
        burst.extraCount = 0
        while burst.count < burst.capacity, burst.extraCount &+ mergeLimit <= burst.extraCapacity {
            let used: UsedBuffer?
            do { used = try virtqueue.pollUsed() } catch { throw .ring(virtqueue.index, error) }
            guard let used else { break }
            let slot = tokenSlot[Int(used.token)]
            lent[lentCount] = slot
            lentCount &+= 1
            // The ring checked used.length <= bufferSize (H3); the header must be there (H2).
            guard used.length >= UInt32(NetHeader.size) else {
                return try broken(.shortFrame(queue: virtqueue.index, length: used.length), burst: burst)
            }
            let base = pointer(slot)
            let header = NetHeader(loading: base)
            var segments = 1
            var total = Int(used.length) &- NetHeader.size
            let firstExtra = burst.extraCount
            if mergeable {
                // H4: 1 <= num_buffers <= the bound; H5: read only with MRG_RXBUF.
                let n = Int(header.numBuffers)
                guard n >= 1, n <= mergeLimit, n <= virtqueue.buffersInFlight &+ 1 else {
                    return try broken(.numBuffersOutOfRange(queue: virtqueue.index, numBuffers: header.numBuffers,
                                                            posted: virtqueue.buffersInFlight &+ 1), burst: burst)
                }
                var complete = true
                while segments < n {
                    let more: UsedBuffer?
                    do { more = try virtqueue.pollUsed() } catch { throw .ring(virtqueue.index, error) }
                    guard let more else { complete = false; break }
                    let s = tokenSlot[Int(more.token)]
                    lent[lentCount] = s
                    lentCount &+= 1
                    total &+= Int(more.length)  // each <= bufferSize (the ring checked), so no overflow
                    burst.extra[burst.extraCount] = UnsafeMutableRawBufferPointer(start: pointer(s), count: Int(more.length))
                    burst.extraCount &+= 1
                    segments &+= 1
                }
                guard complete else {
                    // Linux "buffers out of N missing": drop what came, count it, go on.
                    stats.drops &+= 1
                    stats.errors &+= 1
                    burst.extraCount = firstExtra
                    break
                }
                guard total &+ NetHeader.size <= netMaxMergedBytes else {
                    return try broken(.mergedFrameTooLong(queue: virtqueue.index, bytes: total &+ NetHeader.size,
                                                          limit: netMaxMergedBytes), burst: burst)
                }
            }
            // H2: a runt is dropped and counted, as Linux and DPDK do.
            guard total >= 14 else {
                stats.drops &+= 1
                burst.extraCount = firstExtra
                continue
            }
            // H7: no GSO was negotiated; checksum flags only with GUEST_CSUM (P1: unknown bits ignored).
            let known = header.flags & (NetHeader.needsChecksum | NetHeader.dataValid)
            guard header.gsoType == NetHeader.gsoNone, checksumFlagsAllowed || known == 0 else {
                // Dropped, as Linux drops it; the queue goes on (the frame alone is bad).
                noteFault(.headerFlagsWithoutFeature(queue: virtqueue.index, flags: header.flags, gsoType: header.gsoType))
                stats.drops &+= 1
                stats.errors &+= 1
                burst.extraCount = firstExtra
                continue
            }
            // Without GUEST_CSUM the device MUST write flags 0; P1: the driver ignores bits it does not know.
            if header.flags != 0, !checksumFlagsAllowed {
                noteFault(.headerFlagsWithoutFeature(queue: virtqueue.index, flags: header.flags, gsoType: header.gsoType))
            }
            // H8/P2: checksum offsets only with NEEDS_CSUM and inside the frame.
            var flags = known
            if flags & NetHeader.needsChecksum != 0,
               Int(header.checksumStart) &+ Int(header.checksumOffset) &+ 2 > total {
                flags &= ~NetHeader.needsChecksum
                stats.errors &+= 1
            }
            let first = UnsafeMutableRawBufferPointer(start: base + NetHeader.size, count: Int(used.length) &- NetHeader.size)
            // P2: csum_start / csum_offset mean something only with NEEDS_CSUM.
            let csum = flags & NetHeader.needsChecksum != 0
            burst.frames[burst.filled] = NetRxFrame(first: first, length: total, segments: segments, flags: flags,
                                                   checksumStart: csum ? header.checksumStart : 0,
                                                   checksumOffset: csum ? header.checksumOffset : 0, firstSegment: firstExtra)
            burst.filled &+= 1
            stats.packets &+= 1
            stats.bytes &+= UInt64(total)
        }
        if refilling { try refill() }
        return burst.count
    }

    /// A frame broke a rule that costs only that frame (the rare path, out of line).
    @usableFromInline
    mutating func noteFault(_ v: NetViolation) { lastFault = v }

    /// The device broke a rule: the queue is broken for good. Frames already checked in this
    /// burst are handed out (their buffers were the device's to fill, and it filled them); the
    /// violation is thrown now when there are none, else on the next call.
    @usableFromInline
    mutating func broken(_ v: NetViolation, burst: borrowing NetRxBurst) throws(NetError) -> Int {
        violation = v
        stats.errors &+= 1
        if burst.count > 0 { return burst.count }
        throw .violation(v)
    }

    /// Interrupt mode: re-arms notifications and sleeps until the vector fires or the timeout.
    public mutating func waitForInterrupt(timeoutMilliseconds: Int32) {
        guard interruptFD >= 0 else { return }
        if virtqueue.enableUsedNotifications() { return }
        var p = pollfd(fd: interruptFD, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&p, 1, timeoutMilliseconds) == 1 else { return }
        var count: UInt64 = 0
        if read(interruptFD, &count, 8) == 8 { virtqueue.counters.interrupts &+= count }
    }

    /// Buffers the device holds now.
    public var posted: Int { virtqueue.buffersInFlight }
}
