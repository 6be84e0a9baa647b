import VirtioRing

/// The self-checking block format: `le32 block; le32 generation; le64 checksum` then 4080 bytes of
/// a pattern from (block, generation). The checksum (FNV-1a of the pattern) catches torn or stale data.
enum BlockImage {
    static let size = 4096

    static func fill(_ d: DMARegion, block: Int, generation: UInt32) {
        var x = UInt64(block) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(generation) &* 0xBF58_476D_1CE4_E5B9 | 1
        for i in stride(from: 16, to: size, by: 8) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            d.pointer.storeBytes(of: x.littleEndian, toByteOffset: i, as: UInt64.self)
        }
        d.pointer.storeBytes(of: UInt32(block).littleEndian, toByteOffset: 0, as: UInt32.self)
        d.pointer.storeBytes(of: generation.littleEndian, toByteOffset: 4, as: UInt32.self)
        d.pointer.storeBytes(of: checksum(d).littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// A header no block carries (block number 0xFFFFFFFF).
    static func poison(_ d: DMARegion) {
        d.pointer.storeBytes(of: UInt32.max, toByteOffset: 0, as: UInt32.self)
    }

    static func verify(_ d: DMARegion, block: Int, generation: UInt32) -> Bool {
        UInt32(littleEndian: d.pointer.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == UInt32(block)
            && UInt32(littleEndian: d.pointer.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) == generation
            && UInt64(littleEndian: d.pointer.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) == checksum(d)
    }

    static func checksum(_ d: DMARegion) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for i in 16..<size { h = (h ^ UInt64(d.pointer.load(fromByteOffset: i, as: UInt8.self))) &* 0x100_0000_01B3 }
        return h
    }
}
