/// One element of a buffer: a device address and a length.
@frozen
public struct BufferElement: Sendable, Equatable {
    public var address: UInt64
    public var length: UInt32
    @inlinable
    public init(address: UInt64, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// A buffer the device has returned: the token `add` gave, and the bytes written.
@frozen
public struct UsedBuffer: Sendable, Equatable {
    public var token: UInt16
    /// Bytes the device wrote into the writable part (0 when the device wrote nothing).
    public var length: UInt32
    @inlinable
    public init(token: UInt16, length: UInt32) {
        self.token = token
        self.length = length
    }
}

/// Ring features that change ring behaviour, as negotiated.
public struct RingFeatures: Sendable, Equatable {
    /// VIRTIO_F_INDIRECT_DESC (28).
    public var indirect: Bool
    /// VIRTIO_F_EVENT_IDX (29).
    public var eventIndex: Bool
    /// VIRTIO_F_IN_ORDER (35).
    public var inOrder: Bool

    public init(indirect: Bool = false, eventIndex: Bool = false, inOrder: Bool = false) {
        self.indirect = indirect
        self.eventIndex = eventIndex
        self.inOrder = inOrder
    }
}

/// Ring memory as both sides see it: a pointer for the CPU and the address the device uses.
@frozen
public struct RingArea: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let deviceAddress: UInt64
    public init(pointer: UnsafeMutableRawPointer, deviceAddress: UInt64) {
        self.pointer = pointer
        self.deviceAddress = deviceAddress
    }
}

/// Where a driver keeps its indirect descriptor tables: one table of `maxElements` per buffer id.
public struct IndirectPool: @unchecked Sendable {
    public let area: RingArea
    public let maxElements: Int
    public init(area: RingArea, maxElements: Int) {
        self.area = area
        self.maxElements = maxElements
    }
    /// Bytes needed for a queue of `queueSize` buffers.
    public static func size(queueSize: Int, maxElements: Int) -> Int { queueSize * maxElements * 16 }

    /// What a driver queue keeps of a pool: its tables only when INDIRECT is negotiated and a
    /// table can hold more than one element; otherwise none (max 0 turns indirect off).
    static func tables(_ pool: IndirectPool?, features: RingFeatures) -> (UnsafeMutableRawPointer?, UInt64, Int) {
        guard features.indirect, let pool, pool.maxElements > 1 else { return (nil, 0, 0) }
        return (pool.area.pointer, pool.area.deviceAddress, pool.maxElements)
    }
}

/// A device-readable/-writable element the device side took from a chain.
@frozen
public struct ChainElement: Sendable, Equatable {
    public var address: UInt64
    public var length: UInt32
    public var writable: Bool
    @inlinable
    public init(address: UInt64, length: UInt32, writable: Bool) {
        self.address = address
        self.length = length
        self.writable = writable
    }
}

/// What the device side popped: the buffer id, its elements (in the caller's scratch) and ring descriptors consumed.
@frozen
public struct AvailableChain: Sendable, Equatable {
    /// Buffer id to return in the used entry (split: head index; packed: Buffer ID).
    public var id: UInt16
    /// Elements written into the scratch buffer.
    public var elementCount: Int
    /// How many of those are device-readable (they come first).
    public var readableCount: Int
    /// Descriptors the chain occupies in the ring (1 for an indirect buffer).
    public var ringDescriptors: UInt16
    /// Total bytes of the writable elements.
    public var writableLength: UInt64
    @inlinable
    public init(id: UInt16, elementCount: Int, readableCount: Int, ringDescriptors: UInt16, writableLength: UInt64) {
        self.id = id
        self.elementCount = elementCount
        self.readableCount = readableCount
        self.ringDescriptors = ringDescriptors
        self.writableLength = writableLength
    }
}
