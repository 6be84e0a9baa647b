import VirtioRing

/// Which ring layout a queue runs.
public enum QueueLayout: String, Sendable, Codable {
    case split, packed
}

/// Per-queue counters kept by the driver (plain integers: a queue belongs to one thread).
public struct QueueCounters: Sendable, Equatable {
    public var buffersAdded: UInt64 = 0
    public var buffersUsed: UInt64 = 0
    public var notificationsSent: UInt64 = 0
    public var notificationsSuppressed: UInt64 = 0
    /// Used-buffer notifications received (interrupt mode: eventfd counts read).
    public var interrupts: UInt64 = 0
    /// Polls of the used ring that found nothing.
    public var emptyPolls: UInt64 = 0
    public init() {}
}

/// A driver-side virtqueue on a transport: the ring, its doorbell, and counters.
/// `~Copyable`: it owns the ring; the hot path allocates, retains and dispatches nothing.
public struct Virtqueue<T: VirtioTransport>: ~Copyable {
    public let index: Int
    public let size: Int
    public let layout: QueueLayout
    public let features: RingFeatures
    /// The MSI-X vector in use, nil in poll mode.
    public let vector: UInt16?
    /// The ring memory in DMA space (for diagnostics).
    public let ringMemory: DMARegion
    /// The ring, split or packed (the choice is the ring module's, made once).
    @usableFromInline var ring: DriverQueue
    @usableFromInline let transport: T
    @usableFromInline let target: NotifyTarget
    public var counters = QueueCounters()

    init(index: Int, size: Int, layout: QueueLayout, features: RingFeatures, vector: UInt16?, ringMemory: DMARegion,
         ring: consuming DriverQueue, transport: T, target: NotifyTarget) {
        self.index = index
        self.size = size
        self.layout = layout
        self.features = features
        self.vector = vector
        self.ringMemory = ringMemory
        self.ring = ring
        self.transport = transport
        self.target = target
    }

    /// Makes a buffer available (device-readable elements, then device-writable); returns its token.
    @inlinable @inline(__always)
    public mutating func add(readable: Span<BufferElement>, writable: Span<BufferElement>) throws(RingError) -> UInt16 {
        let token = try ring.add(readable: readable, writable: writable)
        counters.buffersAdded &+= 1
        return token
    }

    /// Makes a one-element buffer available (a receive buffer, a transmit frame with its header).
    @inlinable @inline(__always)
    public mutating func add(_ element: BufferElement, deviceWritable: Bool) throws(RingError) -> UInt16 {
        let token = try ring.add(element, deviceWritable: deviceWritable)
        counters.buffersAdded &+= 1
        return token
    }

    /// Burst: one one-element buffer per element, published at once; tokens into `tokens`.
    /// Returns how many were added (fewer when the ring fills). Decide on notifying with `kick()`.
    @inlinable @inline(__always)
    public mutating func addBurst(_ elements: Span<BufferElement>, deviceWritable: Bool,
                                  tokens: UnsafeMutablePointer<UInt16>) throws(RingError) -> Int {
        let n = try ring.addBurst(elements, deviceWritable: deviceWritable, tokens: tokens)
        counters.buffersAdded &+= UInt64(n)
        return n
    }

    /// Notifies the device whatever its suppression says (a notification is never wrong, only
    /// wasted): for a queue that stopped moving while the device asks for nothing.
    @inlinable @inline(__always)
    public mutating func notifyNow() {
        counters.notificationsSent &+= 1
        var value = UInt32(target.value16)
        if target.withData { value = ring.notificationData(queueIndex: target.value16) }
        transport.notify(target, value: value)
    }

    /// Notifies the device of new buffers unless it suppressed notifications (full barrier inside).
    @inlinable @inline(__always)
    public mutating func kick() {
        guard ring.needsNotification() else {
            counters.notificationsSuppressed &+= 1
            return
        }
        notifyNow()
    }

    /// The next buffer the device returned, or nil.
    @inlinable @inline(__always)
    public mutating func pollUsed() throws(RingError) -> UsedBuffer? {
        let used = try ring.pollUsed()
        if used != nil { counters.buffersUsed &+= 1 } else { counters.emptyPolls &+= 1 }
        return used
    }

    /// Burst: up to `maximum` used buffers into `used`; returns how many.
    @inlinable @inline(__always)
    public mutating func pollUsed(into used: UnsafeMutablePointer<UsedBuffer>, maximum: Int) throws(RingError) -> Int {
        let n = try ring.pollUsed(into: used, maximum: maximum)
        if n > 0 { counters.buffersUsed &+= UInt64(n) } else { counters.emptyPolls &+= 1 }
        return n
    }

    @inlinable
    public var freeDescriptors: Int { ring.freeDescriptors }

    @inlinable
    public var buffersInFlight: Int { ring.buffersInFlight }

    /// The rule the device broke, once it broke one.
    public var violation: RingViolation? { ring.violation }

    public var position: RingPosition { ring.position }

    /// Poll mode: asks the device not to send used-buffer notifications.
    public mutating func disableUsedNotifications() { ring.disableUsedNotifications() }

    /// The ring's indices and both event suppression areas, for a diagnostic when a queue stalls.
    public var notificationState: String { ring.notificationState }

    /// Asks for used-buffer notifications; true when used buffers are already pending.
    public mutating func enableUsedNotifications() -> Bool { ring.enableUsedNotifications() }
}
