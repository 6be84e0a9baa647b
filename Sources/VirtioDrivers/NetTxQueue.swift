import VirtioCore
import VirtioRing
import VirtioWire

/// What a frame builder says about the frame it wrote: its length and, with VIRTIO_NET_F_CSUM,
/// where the device should put the checksum (NEEDS_CSUM; the caller wrote the pseudo-header sum).
@frozen
public struct NetTxFrameInfo: Sendable {
    public var length: Int
    public var checksum: (start: UInt16, offset: UInt16)?
    @inlinable
    public init(length: Int, checksum: (start: UInt16, offset: UInt16)? = nil) {
        self.length = length
        self.checksum = checksum
    }
}

/// A transmit queue: one DMA slot per descriptor holding header and frame together (VERSION_1
/// lets them share a descriptor, as DPDK's pushed header does). Used buffers are reclaimed lazily,
/// their used length ignored (digest H16). A burst is N frames and one notification decision.
public struct NetTxQueue<T: VirtioTransport>: ~Copyable {
    public var virtqueue: Virtqueue<T>
    public let pair: Int
    /// The longest frame this queue sends (MTU + 14, C6).
    public let maxFrame: Int
    @usableFromInline let checksumOffload: Bool
    @usableFromInline let slotSize: Int
    @usableFromInline let slots: DMARegion
    @usableFromInline let free: UnsafeMutablePointer<UInt16>
    @usableFromInline var freeCount: Int
    @usableFromInline let tokenSlot: UnsafeMutablePointer<UInt16>
    @usableFromInline let stage: PostBurst
    public var stats = NetQueueStats()
    /// False for a pair above the ones VQ_PAIRS_SET enabled (M4: nothing may go out on it).
    public internal(set) var enabled = true
    /// Reclaims in a row that found the ring full and nothing used.
    @usableFromInline var idleFullReclaims = 0
    /// Notifications sent because the ring sat full with nothing coming back (see `reclaim`).
    public internal(set) var stallNotifications: UInt64 = 0

    init(virtqueue: consuming Virtqueue<T>, pair: Int, maxFrame: Int, checksumOffload: Bool,
         dma: any DMAAllocator) throws(NetError) {
        let n = virtqueue.size
        self.virtqueue = virtqueue
        self.pair = pair
        self.maxFrame = maxFrame
        self.checksumOffload = checksumOffload
        slotSize = (NetHeader.size + maxFrame + 63) & ~63
        do { slots = try dma.allocate(length: n * slotSize, alignment: 4096) } catch { throw .virtio(.dma(error)) }
        free = .allocate(capacity: n)
        for i in 0..<n { free[i] = UInt16(n - 1 - i) }
        freeCount = n
        tokenSlot = .allocate(capacity: n)
        tokenSlot.initialize(repeating: 0, count: n)
        stage = PostBurst(capacity: n)
    }

    deinit {
        free.deallocate()
        tokenSlot.deallocate()
    }

    /// Takes back every buffer the device has finished with. A ring that stays full with nothing
    /// used gets a notification every 4096 such calls: QEMU 7.2's packed virtio-net transmit queue
    /// was seen idle with all 256 buffers, asking (DESC) for a descriptor it had already used, and
    /// a driver with no room adds nothing, so no later notification decision would ever wake it.
    @inlinable
    public mutating func reclaim() throws(NetError) {
        var took = false
        while true {
            let used: UsedBuffer?
            do { used = try virtqueue.pollUsed() } catch { throw .ring(virtqueue.index, error) }
            guard let used else { break }
            free[freeCount] = tokenSlot[Int(used.token)]
            freeCount &+= 1
            took = true
        }
        if took || room > 0 {
            idleFullReclaims = 0
        } else {
            idleFullReclaims &+= 1
            if idleFullReclaims >= 4096 { stalled() }
        }
    }

    @usableFromInline
    mutating func stalled() {
        idleFullReclaims = 0
        stallNotifications &+= 1
        virtqueue.notifyNow()
    }

    /// Frames that can be sent now without reclaiming.
    @inlinable public var room: Int { min(freeCount, virtqueue.freeDescriptors) }

    /// Sends up to `count` frames that `build` writes straight into DMA memory: `build(i, buffer)`
    /// fills frame `i` (at most `maxFrame` bytes) and returns its length; 0 ends the burst early.
    /// Returns how many went out; the rest (ring full) count as drops. Allocates nothing.
    @inlinable
    public mutating func transmit(count: Int, _ build: (Int, UnsafeMutableRawBufferPointer) -> NetTxFrameInfo) throws(NetError) -> Int {
        guard enabled else {
            throw .invalidRequest("transmit queue \(virtqueue.index) belongs to pair \(pair), above the pairs enabled with VQ_PAIRS_SET")
        }
        // Reclaim lazily: only when the burst does not fit (DPDK's tx_free_thresh idea).
        if room < count { try reclaim() }
        // Frames are built into free slots and staged, then made available in one burst (one
        // avail-idx store, one notification decision), as DPDK's tx_burst does.
        let fit = min(count, room)
        var built = 0
        var bytes = 0
        var refused: NetError?
        while built < fit {
            let slot = free[freeCount &- 1 &- built]
            let base = slots.pointer + Int(slot) &* slotSize
            let info = build(built, UnsafeMutableRawBufferPointer(start: base + NetHeader.size, count: maxFrame))
            guard info.length > 0 else { break }
            guard info.length <= maxFrame else { refused = .frameTooLong(length: info.length, limit: maxFrame); break }
            // T1-T3, T7, T10: the 12-byte header, num_buffers 0, flags only NEEDS_CSUM and only with CSUM.
            var header = NetHeader()
            if let c = info.checksum {
                guard checksumOffload else { refused = .notNegotiated("VIRTIO_NET_F_CSUM (transmit checksum offload)"); break }
                // T6: the sum runs from csum_start to the end and lands at csum_start + csum_offset.
                guard Int(c.start) &+ Int(c.offset) &+ 2 <= info.length else {
                    refused = .invalidRequest("checksum at \(c.start) + \(c.offset) lies outside the \(info.length)-byte frame")
                    break
                }
                header.flags = NetHeader.needsChecksum
                header.checksumStart = c.start
                header.checksumOffset = c.offset
            }
            header.store(to: base)
            stage.stage(BufferElement(address: slots.deviceAddress &+ UInt64(Int(slot) &* slotSize),
                                      length: UInt32(NetHeader.size &+ info.length)), slot: slot, at: built)
            bytes &+= info.length
            built &+= 1
        }
        // The frames built before a refused one still go (they were whole), then the refusal is thrown.
        let sent: Int
        do { sent = try stage.post(built, to: &virtqueue, deviceWritable: false, tokenSlot: tokenSlot) } catch {
            throw .ring(virtqueue.index, error)
        }
        freeCount &-= sent
        if sent > 0 { virtqueue.kick() }
        stats.packets &+= UInt64(sent)
        // Every staged frame went unless the ring filled under us, which `room` rules out.
        stats.bytes &+= UInt64(bytes)
        if let refused { throw refused }
        stats.drops &+= UInt64(count &- sent)
        return sent
    }

    /// Sends copies of frames `range` of a receive burst (io / macswap forwarding); returns how many went out.
    @inlinable
    public mutating func transmit(_ burst: borrowing NetRxBurst, _ range: Range<Int>) throws(NetError) -> Int {
        try transmit(count: range.count) { i, buffer in
            let f = burst[range.lowerBound + i]
            guard f.length <= buffer.count else { return NetTxFrameInfo(length: 0) }
            return NetTxFrameInfo(length: burst.copy(range.lowerBound + i, to: buffer))
        }
    }

    /// Frames given to the device and not yet reclaimed.
    public var inFlight: Int { virtqueue.buffersInFlight }
}
