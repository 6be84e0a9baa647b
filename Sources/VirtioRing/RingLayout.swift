/// The largest queue size any virtio ring may have (2^15).
public let maxQueueSize = 32768

/// Descriptor flag masks shared by both layouts. Masks, never the shift counts
/// of the v7 draft or of Linux uapi (digest A1).
public enum DescriptorFlags {
    public static let next: UInt16 = 1
    public static let write: UInt16 = 2
    public static let indirect: UInt16 = 4
    /// Packed only.
    public static let avail: UInt16 = 1 << 7
    /// Packed only.
    public static let used: UInt16 = 1 << 15
}

/// Split ring areas: descriptor table (align 16), available ring (align 2), used ring (align 4).
public struct SplitLayout: Sendable, Equatable {
    public let queueSize: Int
    public var descriptorTableSize: Int { 16 * queueSize }
    /// flags, idx, ring[N], used_event.
    public var availRingSize: Int { 6 + 2 * queueSize }
    /// flags, idx, ring[N] of {id, len}, avail_event.
    public var usedRingSize: Int { 6 + 8 * queueSize }
    public static let descriptorAlignment = 16
    public static let availAlignment = 2
    public static let usedAlignment = 4

    /// Offsets when the three areas are packed into one block at minimum alignment.
    public var descriptorOffset: Int { 0 }
    public var availOffset: Int { descriptorTableSize }
    public var usedOffset: Int { alignUp(availOffset + availRingSize, Self.usedAlignment) }
    public var totalSize: Int { usedOffset + usedRingSize }

    /// Split queue sizes are powers of two from 1 to 32768 (transport-pci: MUST NOT write a non-power-of-2).
    public init(queueSize: Int) throws(RingError) {
        guard queueSize >= 1, queueSize <= maxQueueSize, queueSize & (queueSize - 1) == 0 else {
            throw .invalidQueueSize(queueSize, packed: false)
        }
        self.queueSize = queueSize
    }

    // Field offsets inside the avail and used areas.
    static let flagsOffset = 0
    static let idxOffset = 2
    static let ringOffset = 4
    var usedEventOffset: Int { 4 + 2 * queueSize }
    var availEventOffset: Int { 4 + 8 * queueSize }
}

/// Packed ring areas: descriptor ring (align 16), driver and device event suppression (align 4, 4 bytes each).
public struct PackedLayout: Sendable, Equatable {
    public let queueSize: Int
    public var descriptorRingSize: Int { 16 * queueSize }
    public static let eventSuppressionSize = 4
    public static let descriptorAlignment = 16
    public static let eventAlignment = 4

    public var descriptorOffset: Int { 0 }
    public var driverEventOffset: Int { descriptorRingSize }
    public var deviceEventOffset: Int { descriptorRingSize + Self.eventSuppressionSize }
    public var totalSize: Int { descriptorRingSize + 2 * Self.eventSuppressionSize }

    /// Packed queue sizes are any value from 1 to 32768 (packed-ring: "does not have to be a power of 2").
    public init(queueSize: Int) throws(RingError) {
        guard queueSize >= 1, queueSize <= maxQueueSize else {
            throw .invalidQueueSize(queueSize, packed: true)
        }
        self.queueSize = queueSize
    }
}

/// Packed event-suppression flag values (final spec, not the v7 pseudo-code; digest A4).
public enum PackedEventFlags {
    public static let enable: UInt16 = 0
    public static let disable: UInt16 = 1
    /// Descriptor-specific: only when VIRTIO_F_EVENT_IDX is negotiated.
    public static let desc: UInt16 = 2
}

/// Split ring flag values.
public enum SplitRingFlags {
    /// avail.flags: the driver asks for no used-buffer notification (no EVENT_IDX only).
    public static let noInterrupt: UInt16 = 1
    /// used.flags: the device asks for no available-buffer notification (no EVENT_IDX only).
    public static let noNotify: UInt16 = 1
}

@inlinable
func alignUp(_ value: Int, _ alignment: Int) -> Int {
    (value + alignment - 1) & ~(alignment - 1)
}
