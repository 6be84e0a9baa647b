import VirtioCore

/// `struct virtio_blk_config`, decoded and checked (the device is untrusted: nonsense limits fail attach).
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
    public var numQueues: UInt16
    public var maxDiscardSectors: UInt32?
    public var maxDiscardSegments: UInt32?
    public var discardSectorAlignment: UInt32?
    public var maxWriteZeroesSectors: UInt32?
    public var maxWriteZeroesSegments: UInt32?
    public var writeZeroesMayUnmap: Bool?

    public var capacityBytes: UInt64 { capacitySectors &* 512 }

    /// Reads the fields the negotiated features make valid, inside one config_generation window.
    public static func read<T>(from device: VirtioDevice<T>) throws(BlockError) -> BlockConfig {
        let f = device.negotiated
        let cfg: BlockConfig
        do {
            cfg = try device.readConfig { (c: ConfigReader) throws(VirtioError) -> BlockConfig in
                var cfg = BlockConfig(capacitySectors: try c.u64(0), blockSize: 512, numQueues: 1)
                if f.contains(BlockFeature.sizeMax) { cfg.sizeMax = try c.u32(8) }
                if f.contains(BlockFeature.segMax) { cfg.segMax = try c.u32(12) }
                if f.contains(BlockFeature.blockSize) { cfg.blockSize = try c.u32(20) }
                if f.contains(BlockFeature.topology) {
                    cfg.physicalBlockExponent = try c.u8(24)
                    cfg.alignmentOffset = try c.u8(25)
                    cfg.minIOSize = try c.u16(26)
                    cfg.optimalIOSize = try c.u32(28)
                }
                if f.contains(BlockFeature.multiQueue) { cfg.numQueues = try c.u16(34) }
                if f.contains(BlockFeature.discard) {
                    cfg.maxDiscardSectors = try c.u32(36)
                    cfg.maxDiscardSegments = try c.u32(40)
                    cfg.discardSectorAlignment = try c.u32(44)
                }
                if f.contains(BlockFeature.writeZeroes) {
                    cfg.maxWriteZeroesSectors = try c.u32(48)
                    cfg.maxWriteZeroesSegments = try c.u32(52)
                    cfg.writeZeroesMayUnmap = try c.u8(56) != 0
                }
                return cfg
            }
        } catch {
            throw .virtio(error)
        }
        return try cfg.validated()
    }

    /// Rejects values no real disk reports (Linux `virtblk_probe` makes the same checks).
    func validated() throws(BlockError) -> BlockConfig {
        guard blockSize >= 512, blockSize <= 65536, blockSize & (blockSize - 1) == 0 else {
            throw .invalidConfig("blk_size \(blockSize) is not a power of two in 512...65536")
        }
        if let m = segMax, m == 0 { throw .invalidConfig("seg_max is 0") }
        if let s = sizeMax, s < 512 { throw .invalidConfig("size_max \(s) is below one sector") }
        guard numQueues >= 1 else { throw .invalidConfig("VIRTIO_BLK_F_MQ negotiated but num_queues is 0") }
        guard capacitySectors <= UInt64.max / 512 else { throw .invalidConfig("capacity \(capacitySectors) sectors overflows") }
        return self
    }
}
