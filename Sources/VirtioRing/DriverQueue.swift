/// Where a queue's three areas sit inside one ring allocation, for either layout.
public struct RingAreas: Sendable, Equatable {
    public let packed: Bool
    public let queueSize: Int
    /// Bytes of the three areas together (rings only; an indirect pool goes after them).
    public let totalSize: Int
    /// Offsets of the descriptor area, driver area and device area from the allocation's start.
    public let descriptors: Int, driver: Int, device: Int
    /// Bytes of each area (what a device must be able to reach at each address).
    public let descriptorBytes: Int, driverBytes: Int, deviceBytes: Int

    /// Throws `RingError.invalidQueueSize` when the size is not one the layout allows.
    public init(packed: Bool, queueSize: Int) throws(RingError) {
        self.packed = packed
        self.queueSize = queueSize
        if packed {
            let l = try PackedLayout(queueSize: queueSize)
            totalSize = l.totalSize
            (descriptors, driver, device) = (l.descriptorOffset, l.driverEventOffset, l.deviceEventOffset)
            (descriptorBytes, driverBytes, deviceBytes) =
                (l.descriptorRingSize, PackedLayout.eventSuppressionSize, PackedLayout.eventSuppressionSize)
        } else {
            let l = try SplitLayout(queueSize: queueSize)
            totalSize = l.totalSize
            (descriptors, driver, device) = (l.descriptorOffset, l.availOffset, l.usedOffset)
            (descriptorBytes, driverBytes, deviceBytes) = (l.descriptorTableSize, l.availRingSize, l.usedRingSize)
        }
    }

    /// The alignment each area needs (`content.tex` / `packed-ring.tex` tables).
    public func aligned(descriptors d: UInt64, driver r: UInt64, device v: UInt64) -> Bool {
        packed ? d % 16 == 0 && r % 4 == 0 && v % 4 == 0 : d % 16 == 0 && r % 2 == 0 && v % 4 == 0
    }
}

/// The driver side of a virtqueue in the negotiated layout: the split-or-packed choice is made
/// once, here, and every call switches on it in place (a predictable branch, no existential; the
/// ring lives behind a pointer so the switch never moves it). `~Copyable`: it owns the ring.
public struct DriverQueue: ~Copyable {
    @usableFromInline
    enum Storage {
        case split(UnsafeMutablePointer<SplitDriverQueue>)
        case packed(UnsafeMutablePointer<PackedDriverQueue>)
    }
    @usableFromInline let storage: Storage

    /// A ring of `areas`'s layout over `memory` (which it zeroes, as the driver MUST before handing it over).
    public init(areas: RingAreas, memory: UnsafeMutableRawPointer, features: RingFeatures, indirect: IndirectPool?) {
        if areas.packed {
            let p = UnsafeMutablePointer<PackedDriverQueue>.allocate(capacity: 1)
            p.initialize(to: PackedDriverQueue(layout: try! PackedLayout(queueSize: areas.queueSize), memory: memory,
                                               features: features, indirect: indirect))
            storage = .packed(p)
        } else {
            let p = UnsafeMutablePointer<SplitDriverQueue>.allocate(capacity: 1)
            p.initialize(to: SplitDriverQueue(layout: try! SplitLayout(queueSize: areas.queueSize), memory: memory,
                                              features: features, indirect: indirect))
            storage = .split(p)
        }
    }

    deinit {
        switch storage {
        case let .split(p): p.deinitialize(count: 1); p.deallocate()
        case let .packed(p): p.deinitialize(count: 1); p.deallocate()
        }
    }

    public var isPacked: Bool {
        if case .packed = storage { true } else { false }
    }
}

extension DriverQueue: DriverRing {
    @inlinable public var queueSize: Int {
        switch storage {
        case let .split(p): p.pointee.queueSize
        case let .packed(p): p.pointee.queueSize
        }
    }

    @inlinable public var freeDescriptors: Int {
        switch storage {
        case let .split(p): p.pointee.freeDescriptors
        case let .packed(p): p.pointee.freeDescriptors
        }
    }

    @inlinable public var buffersInFlight: Int {
        switch storage {
        case let .split(p): p.pointee.buffersInFlight
        case let .packed(p): p.pointee.buffersInFlight
        }
    }

    @inlinable public var violation: RingViolation? {
        switch storage {
        case let .split(p): p.pointee.violation
        case let .packed(p): p.pointee.violation
        }
    }

    @inlinable @inline(__always)
    public mutating func add(readable: Span<BufferElement>, writable: Span<BufferElement>, failure: inout RingError?) -> UInt16 {
        switch storage {
        case let .split(p): p.pointee.add(readable: readable, writable: writable, failure: &failure)
        case let .packed(p): p.pointee.add(readable: readable, writable: writable, failure: &failure)
        }
    }

    @inlinable @inline(__always)
    public mutating func add(_ element: BufferElement, deviceWritable: Bool, failure: inout RingError?) -> UInt16 {
        switch storage {
        case let .split(p): p.pointee.add(element, deviceWritable: deviceWritable, failure: &failure)
        case let .packed(p): p.pointee.add(element, deviceWritable: deviceWritable, failure: &failure)
        }
    }

    @inlinable @inline(__always)
    public mutating func addBurst(_ elements: Span<BufferElement>, deviceWritable: Bool,
                                  tokens: UnsafeMutablePointer<UInt16>, failure: inout RingError?) -> Int {
        switch storage {
        case let .split(p): p.pointee.addBurst(elements, deviceWritable: deviceWritable, tokens: tokens, failure: &failure)
        case let .packed(p): p.pointee.addBurst(elements, deviceWritable: deviceWritable, tokens: tokens, failure: &failure)
        }
    }

    @inlinable @inline(__always)
    public mutating func takeUsed() -> UsedBuffer? {
        switch storage {
        case let .split(p): p.pointee.takeUsed()
        case let .packed(p): p.pointee.takeUsed()
        }
    }

    @inlinable @inline(__always)
    public mutating func needsNotification() -> Bool {
        switch storage {
        case let .split(p): p.pointee.needsNotification()
        case let .packed(p): p.pointee.needsNotification()
        }
    }

    @inlinable @inline(__always)
    public func notificationData(queueIndex: UInt16) -> UInt32 {
        switch storage {
        case let .split(p): p.pointee.notificationData(queueIndex: queueIndex)
        case let .packed(p): p.pointee.notificationData(queueIndex: queueIndex)
        }
    }

    public mutating func disableUsedNotifications() {
        switch storage {
        case let .split(p): p.pointee.disableUsedNotifications()
        case let .packed(p): p.pointee.disableUsedNotifications()
        }
    }

    public mutating func enableUsedNotifications() -> Bool {
        switch storage {
        case let .split(p): p.pointee.enableUsedNotifications()
        case let .packed(p): p.pointee.enableUsedNotifications()
        }
    }

    public mutating func enableUsedNotificationsDelayed() -> Bool {
        switch storage {
        case let .split(p): p.pointee.enableUsedNotificationsDelayed()
        case let .packed(p): p.pointee.enableUsedNotificationsDelayed()
        }
    }

    /// What a stalled queue looks like from here (diagnostics).
    public var notificationState: String {
        switch storage {
        case let .split(p): p.pointee.notificationState
        case let .packed(p): p.pointee.notificationState
        }
    }

    public var position: RingPosition {
        switch storage {
        case let .split(p): p.pointee.position
        case let .packed(p): p.pointee.position
        }
    }
}
