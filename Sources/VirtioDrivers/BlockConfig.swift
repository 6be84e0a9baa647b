
import VirtioCore
import VirtioWire

extension BlockConfig {
    /// Reads the fields the negotiated features make valid, inside one config_generation window,
    /// and checks them (the device is untrusted: nonsense limits fail attach).
    public static func read<T>(from device: VirtioDevice<T>) throws(BlockError) -> BlockConfig {
        let f = device.negotiated
        var valid: BlockConfigFields = []
        if f.contains(BlockFeature.sizeMax) { valid.insert(.sizeMax) }
        if f.contains(BlockFeature.segMax) { valid.insert(.segMax) }
        if f.contains(BlockFeature.blockSize) { valid.insert(.blockSize) }
        if f.contains(BlockFeature.topology) { valid.insert(.topology) }
        if f.contains(BlockFeature.multiQueue) { valid.insert(.multiQueue) }
        if f.contains(BlockFeature.discard) { valid.insert(.discard) }
        if f.contains(BlockFeature.writeZeroes) { valid.insert(.writeZeroes) }
        let cfg: BlockConfig
        do {
            cfg = try device.readConfig { (c: ConfigReader) throws(VirtioError) -> BlockConfig in
                try BlockConfig.decode(valid, read: c.read(offset:width:))
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
        var out = self
        // qemu-storage-daemon offers SIZE_MAX and reports 0: no limit, as Linux reads it too.
        if sizeMax == 0 { out.sizeMax = nil }
        if let s = out.sizeMax, s < 512 { throw .invalidConfig("size_max \(s) is below one sector") }
        guard numQueues >= 1 else { throw .invalidConfig("VIRTIO_BLK_F_MQ negotiated but num_queues is 0") }
        guard capacitySectors <= UInt64.max / 512 else { throw .invalidConfig("capacity \(capacitySectors) sectors overflows") }
        return out
    }
}
