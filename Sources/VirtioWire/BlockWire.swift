/// virtio-blk request types (`device-types/blk/description.tex`, VIRTIO_BLK_T_*). Inlinable
/// constants: the driver's submit path folds them.
public enum BlockRequestType {
    @inlinable public static var read: UInt32 { 0 }
    @inlinable public static var write: UInt32 { 1 }
    @inlinable public static var flush: UInt32 { 4 }
    @inlinable public static var getID: UInt32 { 8 }
    @inlinable public static var getLifetime: UInt32 { 10 }
    @inlinable public static var discard: UInt32 { 11 }
    @inlinable public static var writeZeroes: UInt32 { 13 }
    @inlinable public static var secureErase: UInt32 { 14 }
}

/// The status byte a virtio-blk device writes last (VIRTIO_BLK_S_*).
public enum BlockStatusByte {
    @inlinable public static var ok: UInt8 { 0 }
    @inlinable public static var ioError: UInt8 { 1 }
    @inlinable public static var unsupported: UInt8 { 2 }
    /// Not a spec value: what the driver pre-fills, so a device that never writes the status is caught.
    @inlinable public static var notWritten: UInt8 { 0xFF }
}

/// `struct virtio_blk_outhdr { le32 type; le32 ioprio; le64 sector; }`, the readable head of every request.
public struct BlockRequestHeader: Sendable, Equatable {
    @inlinable public static var size: Int { 16 }
    public var type: UInt32
    public var ioprio: UInt32
    public var sector: UInt64

    @inlinable
    public init(type: UInt32, ioprio: UInt32 = 0, sector: UInt64) {
        self.type = type
        self.ioprio = ioprio
        self.sector = sector
    }

    /// Writes the header at `p` (DMA memory, any alignment the ring's slot gives: 8 here).
    @inlinable
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: ioprio.littleEndian, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// Reads a header from 16 bytes the driver wrote.
    @inlinable
    public init(loading p: UnsafeRawPointer) {
        self.init(type: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                  ioprio: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                  sector: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }
}

/// `struct virtio_blk_discard_write_zeroes { le64 sector; le32 num_sectors; le32 flags; }`.
public struct BlockDiscardSegment: Sendable, Equatable {
    @inlinable public static var size: Int { 16 }
    /// `flags` bit 0 (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP); discard takes no flags.
    public static let unmap: UInt32 = 1
    public var sector: UInt64
    public var sectors: UInt32
    public var flags: UInt32

    @inlinable
    public init(sector: UInt64, sectors: UInt32, flags: UInt32) {
        self.sector = sector
        self.sectors = sectors
        self.flags = flags
    }

    @inlinable
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: sector.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: sectors.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt32.self)
    }

    @inlinable
    public init(loading p: UnsafeRawPointer) {
        self.init(sector: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                  sectors: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                  flags: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
    }
}

/// Offsets of `struct virtio_blk_config` fields (`device-types/blk/description.tex`).
public enum BlockConfigField {
    public static let capacity = 0, sizeMax = 8, segMax = 12, geometry = 16, blockSize = 20
    public static let physicalBlockExponent = 24, alignmentOffset = 25, minIOSize = 26, optimalIOSize = 28
    public static let writeback = 32, numQueues = 34
    public static let maxDiscardSectors = 36, maxDiscardSegments = 40, discardSectorAlignment = 44
    public static let maxWriteZeroesSectors = 48, maxWriteZeroesSegments = 52, writeZeroesMayUnmap = 56
    /// Bytes through write_zeroes_may_unmap and its padding: what this project's device exposes.
    public static let length = 64
    /// `struct virtio_blk_config` as QEMU 7.2 has it (through write_zeroes_may_unmap and its three
    /// unused bytes): the most qemu-storage-daemon answers in GET_CONFIG (a larger ask gets an empty reply).
    public static let vhostUserLength = 60
}

/// Which `virtio_blk_config` fields are valid: each follows from a negotiated feature.
public struct BlockConfigFields: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let sizeMax = Self(rawValue: 1 << 0), segMax = Self(rawValue: 1 << 1)
    public static let blockSize = Self(rawValue: 1 << 2), topology = Self(rawValue: 1 << 3)
    public static let multiQueue = Self(rawValue: 1 << 4), discard = Self(rawValue: 1 << 5)
    public static let writeZeroes = Self(rawValue: 1 << 6), writeback = Self(rawValue: 1 << 7)
}

/// `struct virtio_blk_config`, decoded: nil fields were not valid under the negotiated features.
public struct BlockConfig: Sendable, Equatable, Codable {
    /// Capacity in 512-byte sectors.
    public var capacitySectors: UInt64
    public var sizeMax: UInt32?
    public var segMax: UInt32?
    /// Logical block size in bytes (512 when BLK_SIZE is not negotiated).
    public var blockSize: UInt32
    public var physicalBlockExponent: UInt8?
    public var alignmentOffset: UInt8?
    public var minIOSize: UInt16?
    public var optimalIOSize: UInt32?
    /// CONFIG_WCE's cache mode byte (1: writeback).
    public var writeback: UInt8?
    public var numQueues: UInt16
    public var maxDiscardSectors: UInt32?
    public var maxDiscardSegments: UInt32?
    public var discardSectorAlignment: UInt32?
    public var maxWriteZeroesSectors: UInt32?
    public var maxWriteZeroesSegments: UInt32?
    public var writeZeroesMayUnmap: Bool?

    public init(capacitySectors: UInt64, blockSize: UInt32 = 512, numQueues: UInt16 = 1) {
        self.capacitySectors = capacitySectors
        self.blockSize = blockSize
        self.numQueues = numQueues
    }

    public var capacityBytes: UInt64 { capacitySectors &* 512 }

    /// Reads the valid fields through `read(offset, width)`, each with its natural width (as
    /// `transport-pci.tex` asks of device-specific configuration accesses).
    public static func decode<E: Error>(_ valid: BlockConfigFields,
                                        read: (_ offset: Int, _ width: Int) throws(E) -> UInt64) throws(E) -> BlockConfig {
        typealias F = BlockConfigField
        var c = BlockConfig(capacitySectors: try read(F.capacity, 8))
        if valid.contains(.sizeMax) { c.sizeMax = UInt32(truncatingIfNeeded: try read(F.sizeMax, 4)) }
        if valid.contains(.segMax) { c.segMax = UInt32(truncatingIfNeeded: try read(F.segMax, 4)) }
        if valid.contains(.blockSize) { c.blockSize = UInt32(truncatingIfNeeded: try read(F.blockSize, 4)) }
        if valid.contains(.topology) {
            c.physicalBlockExponent = UInt8(truncatingIfNeeded: try read(F.physicalBlockExponent, 1))
            c.alignmentOffset = UInt8(truncatingIfNeeded: try read(F.alignmentOffset, 1))
            c.minIOSize = UInt16(truncatingIfNeeded: try read(F.minIOSize, 2))
            c.optimalIOSize = UInt32(truncatingIfNeeded: try read(F.optimalIOSize, 4))
        }
        if valid.contains(.writeback) { c.writeback = UInt8(truncatingIfNeeded: try read(F.writeback, 1)) }
        if valid.contains(.multiQueue) { c.numQueues = UInt16(truncatingIfNeeded: try read(F.numQueues, 2)) }
        if valid.contains(.discard) {
            c.maxDiscardSectors = UInt32(truncatingIfNeeded: try read(F.maxDiscardSectors, 4))
            c.maxDiscardSegments = UInt32(truncatingIfNeeded: try read(F.maxDiscardSegments, 4))
            c.discardSectorAlignment = UInt32(truncatingIfNeeded: try read(F.discardSectorAlignment, 4))
        }
        if valid.contains(.writeZeroes) {
            c.maxWriteZeroesSectors = UInt32(truncatingIfNeeded: try read(F.maxWriteZeroesSectors, 4))
            c.maxWriteZeroesSegments = UInt32(truncatingIfNeeded: try read(F.maxWriteZeroesSegments, 4))
            c.writeZeroesMayUnmap = try read(F.writeZeroesMayUnmap, 1) != 0
        }
        return c
    }

    /// The 64 configuration bytes a device exposes for this config (absent fields read 0).
    public func encoded() -> [UInt8] {
        typealias F = BlockConfigField
        var c = [UInt8](repeating: 0, count: F.length)
        func put<T: FixedWidthInteger>(_ v: T?, _ at: Int) {
            guard let v else { return }
            withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { c[at + i] = b } }
        }
        put(capacitySectors, F.capacity)
        put(sizeMax, F.sizeMax)
        put(segMax, F.segMax)
        put(blockSize, F.blockSize)
        put(physicalBlockExponent, F.physicalBlockExponent)
        put(alignmentOffset, F.alignmentOffset)
        put(minIOSize, F.minIOSize)
        put(optimalIOSize, F.optimalIOSize)
        put(writeback, F.writeback)
        put(numQueues, F.numQueues)
        put(maxDiscardSectors, F.maxDiscardSectors)
        put(maxDiscardSegments, F.maxDiscardSegments)
        put(discardSectorAlignment, F.discardSectorAlignment)
        put(maxWriteZeroesSectors, F.maxWriteZeroesSectors)
        put(maxWriteZeroesSegments, F.maxWriteZeroesSegments)
        put(writeZeroesMayUnmap.map { UInt8($0 ? 1 : 0) }, F.writeZeroesMayUnmap)
        return c
    }
}
