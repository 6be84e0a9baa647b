import VirtioRing
import VirtioWire

/// One statistic on a statistics queue: `le16 tag; le64 val`, packed (10 bytes), as virtio-balloon
/// The driver's side of a device-driven statistics queue (balloon `VIRTIO_BALLOON_F_STATS_VQ`):
/// exactly one buffer is posted at any time; when the device returns it, that is a request, and
/// the driver fills it with fresh entries and posts it again. Polled: call `poll` as often as you
/// like (the device may ask at any rate). Nothing here allocates per request.
public final class StatsQueueResponder<T: VirtioTransport> {
    let queue: UnsafeMutablePointer<Virtqueue<T>>
    let buffer: DMARegion
    public let queueIndex: Int
    /// Entries one buffer holds.
    public let capacity: Int
    /// Requests the device made (buffers it returned).
    public private(set) var requests: UInt64 = 0
    /// The buffer the device holds now (its ring token), if any.
    public private(set) var outstanding: UInt16?
    /// What was last posted.
    public private(set) var lastPosted: [StatEntry] = []

    public init(device: VirtioDevice<T>, queueIndex: Int, capacity: Int) throws(VirtioError) {
        self.queueIndex = queueIndex
        self.capacity = capacity
        let q = try device.makeQueue(queueIndex, size: 8)
        do { buffer = try device.transport.dma.allocate(length: capacity * StatEntry.size, alignment: 64) } catch {
            throw .dma(error)
        }
        queue = .allocate(capacity: 1)
        queue.initialize(to: q)
    }

    deinit {
        queue.deinitialize(count: 1)
        queue.deallocate()
    }

    public var counters: QueueCounters { queue.pointee.counters }

    /// Fills the buffer with `entries` (at most `capacity`) and makes it available; the first call
    /// is the initial buffer the spec asks for at initialisation.
    public func post(_ entries: [StatEntry]) throws(VirtioError) {
        guard outstanding == nil else { throw .statsBufferOutstanding(queue: queueIndex) }
        let use = Array(entries.prefix(capacity))
        let bytes = StatEntry.encode(use)
        bytes.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let element = [BufferElement(address: buffer.deviceAddress, length: UInt32(max(bytes.count, StatEntry.size)))]
        let token: UInt16
        do {
            token = try element.withUnsafeBufferPointer { e throws(RingError) -> UInt16 in
                try queue.pointee.add(readable: e.span, writable: UnsafeBufferPointer(start: e.baseAddress, count: 0).span)
            }
        } catch { throw .ring(queue: queueIndex, error) }
        outstanding = token
        lastPosted = use
        queue.pointee.kick()
    }

    /// Answers a pending request with `provider()`'s entries; true when there was one.
    /// The device broke the protocol if it returns anything but the one buffer it holds.
    @discardableResult
    public func poll(_ provider: () -> [StatEntry]) throws(VirtioError) -> Bool {
        let used: UsedBuffer?
        do { used = try queue.pointee.pollUsed() } catch { throw .ring(queue: queueIndex, error) }
        guard let used else { return false }
        guard used.token == outstanding else {
            throw .statsWrongBuffer(queue: queueIndex, token: used.token)
        }
        outstanding = nil
        requests &+= 1
        try post(provider())
        return true
    }
}
