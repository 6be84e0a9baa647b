import VirtioRing

/// Which ring layout a queue runs.
public enum QueueLayout: String, Sendable, Codable {
    case split, packed
}

/// Where a queue's ring lives: the ring struct of the negotiated layout, owned through a
/// pointer so the queue can switch on it without moving it (a predictable branch, no existential).
@usableFromInline
enum RingStorage {
    case split(UnsafeMutablePointer<SplitDriverQueue>)
    case packed(UnsafeMutablePointer<PackedDriverQueue>)

    /// Destroys the ring and frees its pointer.
    func release() {
        switch self {
        case let .split(p): p.deinitialize(count: 1); p.deallocate()
        case let .packed(p): p.deinitialize(count: 1); p.deallocate()
        }
    }
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
    @usableFromInline let ring: RingStorage
    @usableFromInline let transport: T
    @usableFromInline let target: NotifyTarget
    public var counters = QueueCounters()

    init(index: Int, size: Int, layout: QueueLayout, features: RingFeatures, vector: UInt16?, ringMemory: DMARegion,
         ring: RingStorage, transport: T, target: NotifyTarget) {
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

    deinit { ring.release() }

    /// Makes a buffer available (device-readable elements, then device-writable); returns its token.
    @inlinable @inline(__always)
    public mutating func add(readable: Span<BufferElement>, writable: Span<BufferElement>) throws(RingError) -> UInt16 {
        let token: UInt16
        switch ring {
        case let .split(p): token = try p.pointee.add(readable: readable, writable: writable)
        case let .packed(p): token = try p.pointee.add(readable: readable, writable: writable)
        }
        counters.buffersAdded &+= 1
        return token
    }

    /// Notifies the device of new buffers unless it suppressed notifications (full barrier inside).
    @inlinable @inline(__always)
    public mutating func kick() {
        let needed: Bool
        switch ring {
        case let .split(p): needed = p.pointee.needsNotification()
        case let .packed(p): needed = p.pointee.needsNotification()
        }
        guard needed else {
            counters.notificationsSuppressed &+= 1
            return
        }
        counters.notificationsSent &+= 1
        var value = UInt32(target.value16)
        if target.withData {
            switch ring {
            case let .split(p): value = p.pointee.notificationData(queueIndex: target.value16)
            case let .packed(p): value = p.pointee.notificationData(queueIndex: target.value16)
            }
        }
        transport.notify(target, value: value)
    }

    /// The next buffer the device returned, or nil.
    @inlinable @inline(__always)
    public mutating func pollUsed() throws(RingError) -> UsedBuffer? {
        let used: UsedBuffer?
        switch ring {
        case let .split(p): used = try p.pointee.pollUsed()
        case let .packed(p): used = try p.pointee.pollUsed()
        }
        if used != nil { counters.buffersUsed &+= 1 } else { counters.emptyPolls &+= 1 }
        return used
    }

    @inlinable
    public var freeDescriptors: Int {
        switch ring {
        case let .split(p): p.pointee.freeDescriptors
        case let .packed(p): p.pointee.freeDescriptors
        }
    }

    @inlinable
    public var buffersInFlight: Int {
        switch ring {
        case let .split(p): p.pointee.buffersInFlight
        case let .packed(p): p.pointee.buffersInFlight
        }
    }

    /// The rule the device broke, once it broke one.
    public var violation: RingViolation? {
        switch ring {
        case let .split(p): p.pointee.violation
        case let .packed(p): p.pointee.violation
        }
    }

    public var position: RingPosition {
        switch ring {
        case let .split(p): p.pointee.position
        case let .packed(p): p.pointee.position
        }
    }

    /// Poll mode: asks the device not to send used-buffer notifications.
    public mutating func disableUsedNotifications() {
        switch ring {
        case let .split(p): p.pointee.disableUsedNotifications()
        case let .packed(p): p.pointee.disableUsedNotifications()
        }
    }

    /// Asks for used-buffer notifications; true when used buffers are already pending.
    public mutating func enableUsedNotifications() -> Bool {
        switch ring {
        case let .split(p): p.pointee.enableUsedNotifications()
        case let .packed(p): p.pointee.enableUsedNotifications()
        }
    }
}
