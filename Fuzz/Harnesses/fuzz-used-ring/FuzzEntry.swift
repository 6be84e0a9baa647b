// fuzz-used-ring: the driver side of a virtqueue (SplitDriverQueue / PackedDriverQueue) against a
// device that writes whatever it likes into the memory the device owns. The harness keeps its own
// model of what is in flight and traps when the driver hands back something no device can make it
// return (see RingHarness.swift). Throwing `.broken` is the driver's right answer to a liar.
//
// Input: byte 0 picks the layout and features, byte 1 the queue size, the rest is an op stream.
#if canImport(Glibc)
import Glibc
#endif
import VirtioRing
import FuzzReplay

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(UnsafeBufferPointer(start: data, count: size))
    let mode = input.u8()
    let packed = mode & 1 != 0
    let features = RingFeatures(indirect: mode & 8 != 0, eventIndex: mode & 4 != 0, inOrder: mode & 2 != 0)
    let sizeByte = input.u8()
    // Split sizes must be powers of two; packed ones need not be (packed-ring).
    let n = packed ? Int(sizeByte) + 1 : 1 << Int(sizeByte % 9)
    // 2...9 elements per indirect table; IndirectPool turns tables off when `indirect` is false.
    let indirectMax = Int(mode >> 4) % 8 + 2

    // Every area is its own heap block, so ASan flags a driver that reads or writes past one.
    let descBytes = 16 * n
    let split = try! SplitLayout(queueSize: packed ? 1 : n)
    let driverBytes = packed ? PackedLayout.eventSuppressionSize : split.availRingSize
    let deviceBytes = packed ? PackedLayout.eventSuppressionSize : split.usedRingSize
    let desc = UnsafeMutableRawPointer.allocate(byteCount: descBytes, alignment: 16)
    let driverArea = UnsafeMutableRawPointer.allocate(byteCount: driverBytes, alignment: 16)
    let deviceArea = UnsafeMutableRawPointer.allocate(byteCount: deviceBytes, alignment: 16)
    // DMA memory as the device sees it: the indirect tables (the only thing it dereferences).
    let poolBytes = IndirectPool.size(queueSize: n, maxElements: indirectMax)
    let dma = UnsafeMutableRawPointer.allocate(byteCount: poolBytes, alignment: 4096)
    dma.initializeMemory(as: UInt8.self, repeating: 0, count: poolBytes)
    let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: max(n, indirectMax))
    defer {
        desc.deallocate(); driverArea.deallocate(); deviceArea.deallocate(); dma.deallocate(); scratch.deallocate()
    }
    let deviceBase: UInt64 = 0x1_0000_0000
    let arena = DMAArena(external: dma, size: poolBytes, deviceBase: deviceBase)
    let pool = IndirectPool(area: RingArea(pointer: dma, deviceAddress: deviceBase), maxElements: indirectMax)

    if packed {
        let layout = try! PackedLayout(queueSize: n)
        var driver = PackedDriverQueue(layout: layout, descriptors: desc, driverArea: driverArea, deviceArea: deviceArea,
                                       features: features, indirect: pool)
        var device = PackedDeviceQueue(layout: layout, descriptors: desc, driverArea: driverArea, deviceArea: deviceArea,
                                       memory: arena, features: features)
        // Packed: the device writes used descriptors into the descriptor ring, and its own event suppression.
        var h = RingHarness(queueSize: n, deviceWritten: [(desc, descBytes), (deviceArea, deviceBytes)], scratch: scratch)
        h.run(&driver, &device, &input)
    } else {
        var driver = SplitDriverQueue(layout: split, descriptors: desc, driverArea: driverArea, deviceArea: deviceArea,
                                      features: features, indirect: pool)
        var device = SplitDeviceQueue(layout: split, descriptors: desc, driverArea: driverArea, deviceArea: deviceArea,
                                      memory: arena, features: features)
        var h = RingHarness(queueSize: n, deviceWritten: [(deviceArea, deviceBytes)], scratch: scratch)
        h.run(&driver, &device, &input)
    }
    return 0
}

/// The fuzz input read front to back; past its end every read is 0, so ops never need length checks.
struct FuzzInput {
    let bytes: UnsafeBufferPointer<UInt8>
    var at = 0
    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }
    var isEmpty: Bool { at >= bytes.count }
    mutating func u8() -> UInt8 {
        defer { at += 1 }
        return at < bytes.count ? bytes[at] : 0
    }
    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
}

#if !FUZZING
/// Without libFuzzer: replays crash files (or directories of them).
@main
enum Replay {
    static func main() { FuzzReplay.run(fuzzOne) }
}
#endif
