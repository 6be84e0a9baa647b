import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice

typealias SoftTransport = PCITransport<SoftPCIFunction<SoftBlock>>

/// A soft block function from `key=value` options.
func softBlock(_ spec: String = "", faults: SoftFaults = SoftFaults()) throws -> SoftPCIFunction<SoftBlock> {
    let pairs = spec.split(separator: ",").map(String.init)
    return try SoftPCIFunction.block(try SoftBlockOptions(parsing: pairs), faults: faults)
}

/// Attaches the block driver to a fresh soft function.
func attach(_ spec: String = "", faults: SoftFaults = SoftFaults(), options: BlockAttachOptions = BlockAttachOptions())
    throws -> (SoftPCIFunction<SoftBlock>, BlockDevice<SoftTransport>) {
    let f = try softBlock(spec, faults: faults)
    let t = try PCITransport(function: f)
    return (f, try BlockDevice(transport: t, options: options))
}

/// Deterministic bytes for block `lba` of generation `gen`.
func fill(_ region: DMARegion, lba: UInt64, gen: UInt64) {
    var x = lba &* 0x9E37_79B9_7F4A_7C15 ^ gen &* 0xBF58_476D_1CE4_E5B9
    for i in stride(from: 0, to: region.length, by: 8) {
        x ^= x >> 31; x &*= 0x94D0_49BB_1331_11EB; x ^= x >> 29
        region.pointer.storeBytes(of: x, toByteOffset: i, as: UInt64.self)
    }
}

func bytes(_ region: DMARegion) -> [UInt8] { Array(UnsafeRawBufferPointer(start: region.pointer, count: region.length)) }

/// What `fill` writes, as plain bytes.
func patternBytes(lba: UInt64, gen: UInt64, length: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: length)
    out.withUnsafeMutableBytes { fill(DMARegion(pointer: $0.baseAddress!, deviceAddress: 0, length: length), lba: lba, gen: gen) }
    return out
}
