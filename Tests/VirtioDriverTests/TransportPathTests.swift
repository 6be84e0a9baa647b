import Synchronization
import Testing
import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioSoftDevice

/// A function whose virtio BAR is plain mapped memory (as VFIO gives): no register semantics,
/// so the transport's volatile pointer path can be checked byte for byte.
final class MappedFunction: PCIFunction, @unchecked Sendable {
    let soft: SoftPCIFunction<SoftBlock>
    let memory = UnsafeMutableRawPointer.allocate(byteCount: 0x4000, alignment: 4096)
    init(_ soft: SoftPCIFunction<SoftBlock>) {
        self.soft = soft
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: 0x4000)
    }
    deinit { memory.deallocate() }
    var address: String { "mapped" }
    func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 { try soft.configRead(offset: offset, width: width) }
    func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {}
    func bar(_ index: Int) -> BARInfo? { index == 4 ? BARInfo(size: 0x4000, isMemory: true, mapped: memory) : soft.bar(index) }
    func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 { throw .unsupported("mapped only") }
    func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) { throw .unsupported("mapped only") }
    var dma: any DMAAllocator { soft.dma }
    func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] { [] }
    func disableInterrupts() {}
}

@Suite(.leakChecked) struct TransportPathTests {
    @Test func mappedBARUsesVolatileAccessesOfTheFieldWidth() throws {
        let f = MappedFunction(try softBlock())
        let t = try PCITransport(function: f)
        // Device config at BAR 4 + 0x2000: capacity as two 32-bit halves.
        f.memory.storeBytes(of: UInt64(0x1122_3344_5566_7788).littleEndian, toByteOffset: 0x2000, as: UInt64.self)
        #expect(try t.readDeviceConfig(offset: 0, width: 4) == 0x5566_7788)
        #expect(try t.readDeviceConfig(offset: 4, width: 4) == 0x1122_3344)
        #expect(throws: VirtioError.self) { _ = try t.readDeviceConfig(offset: 0, width: 8) }
        // Status is one byte at common + 0x14; nothing around it is touched.
        try t.writeStatus([.acknowledge, .driver])
        #expect(f.memory.load(fromByteOffset: 0x14, as: UInt8.self) == 3)
        #expect(f.memory.load(fromByteOffset: 0x15, as: UInt8.self) == 0)
        // Doorbells: 16-bit index without notification data, 32-bit value with it (queue 0 at notify + 0).
        let narrow = NotifyTarget(pointer: f.memory + 0x3000, location: 4 << 32 | 0x3000, value16: 0, withData: false)
        f.memory.storeBytes(of: UInt32(0xFFFF_FFFF), toByteOffset: 0x3000, as: UInt32.self)
        t.notify(narrow, value: 0x0005_0000)
        #expect(f.memory.load(fromByteOffset: 0x3000, as: UInt32.self) == 0xFFFF_0000)
        let wide = NotifyTarget(pointer: f.memory + 0x3000, location: 4 << 32 | 0x3000, value16: 0, withData: true)
        t.notify(wide, value: 0x8005_0000)
        #expect(f.memory.load(fromByteOffset: 0x3000, as: UInt32.self) == 0x8005_0000)
        #expect(t.notifyFailure == nil)
    }

    @Test func isrIsSetForPolledQueuesAndClearedByReading() throws {
        let f = try softBlock()
        let t = try PCITransport(function: f)
        let device = VirtioDevice(transport: t)
        try device.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
        var q = try device.makeQueue(0, size: 8)
        try device.driverOK()
        _ = q.enableUsedNotifications()
        let mem = try t.dma.allocate(length: 64, alignment: 64)
        mem.pointer.storeBytes(of: UInt32(4), as: UInt32.self)  // FLUSH: header + status
        let readable = [BufferElement(address: mem.deviceAddress, length: 16)]
        let writable = [BufferElement(address: mem.deviceAddress + 16, length: 1)]
        _ = try q.add(readable: readable.span, writable: writable.span)
        q.kick()
        #expect(try q.pollUsed() != nil)
        // Without MSI-X the device raises the queue bit in ISR; a read returns it and clears it.
        #expect(try t.readISR() == 1)
        #expect(try t.readISR() == 0)
        // FLUSH was not negotiated (no device bits accepted): the device answered UNSUPP.
        #expect(mem.pointer.load(fromByteOffset: 16, as: UInt8.self) == 2)
    }

    @Test func pciCfgWindowAccessesAreCheckedByTheDevice() throws {
        let f = try softBlock()
        let cap = 0x84
        // A 1-byte read of device_status (common + 0x14) through pci_cfg_data.
        try f.configWrite(offset: cap + 4, width: 1, value: 4)
        try f.configWrite(offset: cap + 8, width: 4, value: 0x14)
        try f.configWrite(offset: cap + 12, width: 4, value: 1)
        try f.configWrite(offset: cap + 16, width: 1, value: 0)  // write 0: a reset
        #expect(try f.configRead(offset: cap + 16, width: 4) == 0)
        #expect(f.log.violations.isEmpty)
        // Misaligned: a 4-byte access at offset 0x15.
        try f.configWrite(offset: cap + 8, width: 4, value: 0x15)
        try f.configWrite(offset: cap + 12, width: 4, value: 4)
        _ = try f.configRead(offset: cap + 16, width: 4)
        #expect(f.log.violations.count == 1)
        #expect(f.log.violations.first?.rule.contains("PCI configuration access") == true)
    }
}

/// A BAR mapped sparsely, as VFIO does around an MSI-X table: common config (0x0) and notify
/// (0x3000) are mapped; ISR (0x1000) and device config (0x2000) fall in holes.
final class SparseFunction: PCIFunction, @unchecked Sendable {
    let inner: MappedFunction
    let calls = Mutex<[Int]>([])
    init(_ soft: SoftPCIFunction<SoftBlock>) { inner = MappedFunction(soft) }
    var address: String { "sparse" }
    func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 { try inner.configRead(offset: offset, width: width) }
    func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {}
    func bar(_ index: Int) -> BARInfo? {
        index == 4 ? BARInfo(size: 0x4000, isMemory: true, mapped: inner.memory, mappedRanges: [0..<0x1000, 0x3000..<0x4000])
                   : inner.bar(index)
    }
    func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        calls.withLock { $0.append(offset) }
        return 0x42
    }
    func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) { calls.withLock { $0.append(offset) } }
    var dma: any DMAAllocator { inner.dma }
    func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] { [] }
    func disableInterrupts() {}
}

@Suite(.leakChecked) struct SparseMappingTests {
    @Test func windowsInMappedAreasUsePointersAndHolesUseCalls() throws {
        let f = SparseFunction(try softBlock())
        let t = try PCITransport(function: f)
        try t.writeStatus([.acknowledge])
        #expect(f.inner.memory.load(fromByteOffset: 0x14, as: UInt8.self) == 1)  // mapped: straight to memory
        #expect(f.calls.withLock { $0 }.isEmpty)
        #expect(try t.readDeviceConfig(offset: 0, width: 4) == 0x42)       // hole: through the call
        #expect(try t.readISR() == 0x42)
        #expect(f.calls.withLock { $0 } == [0x2000, 0x1000])
        let details = Dictionary(uniqueKeysWithValues: t.transportDetails)
        #expect(details["common_cfg"]?.hasSuffix("mapped") == true)
        #expect(details["device_cfg"]?.hasSuffix("mapped") == false)
    }

    @Test func aPointerNeedsOneRangeToHoldTheWholeWindow() {
        let base = UnsafeMutableRawPointer(bitPattern: 0x10000)!
        let bar = BARInfo(size: 0x4000, isMemory: true, mapped: base, mappedRanges: [0..<0x1000, 0x1000..<0x2000])
        #expect(bar.pointer(offset: 0xFFC, length: 4) == base + 0xFFC)
        #expect(bar.pointer(offset: 0xFFE, length: 4) == nil)  // straddles two areas: each window must sit inside one
        #expect(bar.pointer(offset: 0x2000, length: 1) == nil)
        #expect(BARInfo(size: 16, isMemory: true, mapped: nil).pointer(offset: 0, length: 1) == nil)
    }
}
