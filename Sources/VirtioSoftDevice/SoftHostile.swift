import VirtioRing

/// How a hostile device returns a buffer (the software device's fault modes, `fault=NAME`).
public enum HostileUsed: String, Sendable, CaseIterable {
    /// A used id the driver never gave (past the queue size).
    case idOutOfRange = "used_id_range"
    /// The same id returned twice.
    case duplicateID = "dup_id"
    /// A used length larger than the buffer's writable part.
    case lengthOverflow = "len_overflow"
    /// Split: used.idx moved far past what was in flight. Packed: the used flags' wrap counter flipped early.
    case indexJump = "idx_jump"
    /// Packed: AVAIL and USED bits that disagree (split: same as indexJump).
    case flagsLie = "flags_lie"
}

/// A device side that can return buffers the way a hostile device would. The production ring
/// only ever writes what it is told (`pushUsed`); the lies are written here, from its raw writers.
public protocol HostileDeviceRing: DeviceRing, ~Copyable {
    mutating func pushHostile(_ kind: HostileUsed, id: UInt16, length: UInt32, ringDescriptors: UInt16)
}

extension SplitDeviceQueue: HostileDeviceRing {
    public mutating func pushHostile(_ kind: HostileUsed, id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        switch kind {
        case .idOutOfRange: pushRawUsed(id: UInt32(queueSize) &+ 7, length: length)
        case .duplicateID:
            pushUsed(id: id, length: length, ringDescriptors: ringDescriptors)
            pushRawUsed(id: UInt32(id), length: length)
        case .lengthOverflow: pushUsed(id: id, length: length &+ 4096, ringDescriptors: ringDescriptors)
        case .indexJump, .flagsLie:
            pushRawUsed(id: UInt32(id), length: length, advance: UInt16(truncatingIfNeeded: queueSize) &+ 3)
        }
    }
}

extension PackedDeviceQueue: HostileDeviceRing {
    public mutating func pushHostile(_ kind: HostileUsed, id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        let both = DescriptorFlags.avail | DescriptorFlags.used
        // The flags a correct device writes in the current lap.
        let good: UInt16 = position.usedWrap ? both : 0
        switch kind {
        case .idOutOfRange:
            pushRawUsed(id: UInt16(truncatingIfNeeded: queueSize) &+ 7, length: length, flags: good, advance: ringDescriptors)
        case .duplicateID:
            pushUsed(id: id, length: length, ringDescriptors: ringDescriptors)
            pushRawUsed(id: id, length: length, flags: position.usedWrap ? both : 0, advance: 1)
        case .lengthOverflow: pushUsed(id: id, length: length &+ 4096, ringDescriptors: ringDescriptors)
        case .indexJump:  // the wrap counter flipped early: flags of the next lap, which read as "not used yet"
            pushRawUsed(id: id, length: length, flags: good ^ both, advance: ringDescriptors)
        case .flagsLie:  // USED says "used in this lap", AVAIL disagrees
            pushRawUsed(id: id, length: length, flags: good ^ DescriptorFlags.avail, advance: ringDescriptors)
        }
    }
}

extension DeviceQueue: HostileDeviceRing {
    public mutating func pushHostile(_ kind: HostileUsed, id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        withLayout(split: { $0.pushHostile(kind, id: id, length: length, ringDescriptors: ringDescriptors) },
                   packed: { $0.pushHostile(kind, id: id, length: length, ringDescriptors: ringDescriptors) })
    }
}
