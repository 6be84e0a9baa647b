import Testing
import VirtioRing

/// The layout-neutral queues: `DriverQueue` and `DeviceQueue` own the split-or-packed choice, and
/// traffic between them behaves the same in both layouts (wrap-arounds, chains, out-of-order returns).
@Suite struct LayoutNeutralQueueTests {
    @Test(arguments: [(false, 8), (false, 256), (true, 8), (true, 7), (true, 300)])
    func trafficThroughTheNeutralQueues(packed: Bool, size: Int) throws {
        let arena = try DMAArena(size: 1 << 20)
        let areas = try RingAreas(packed: packed, queueSize: size)
        let ring = try arena.allocate(length: areas.totalSize, alignment: 4096)
        var driver = DriverQueue(areas: areas, memory: ring.pointer, features: RingFeatures(), indirect: nil)
        var device = try DeviceQueue(packed: packed, queueSize: size,
                                     descriptors: ring.deviceAddress + UInt64(areas.descriptors),
                                     driver: ring.deviceAddress + UInt64(areas.driver),
                                     device: ring.deviceAddress + UInt64(areas.device), memory: arena, features: RingFeatures())
        #expect(driver.isPacked == packed && driver.queueSize == size && device.queueSize == size)
        let data = try arena.allocate(length: 4096)
        let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: size)
        defer { scratch.deallocate() }
        var returned = 0
        // Several laps: two-element chains, returned in reverse order of popping.
        for round in 0..<(4 * size) {
            let r = [BufferElement(address: data.deviceAddress, length: 16)]
            let w = [BufferElement(address: data.deviceAddress + 16, length: UInt32(100 + round % 7))]
            let token = try driver.add(readable: r, writable: w)
            #expect(Int(token) < size)
            _ = driver.needsNotification()
            guard let chain = try device.popAvailable(into: scratch) else { Issue.record("nothing available"); return }
            #expect(chain.elementCount == 2 && chain.readableCount == 1)
            device.pushUsed(chain, length: 1)
            _ = device.needsInterrupt()
            guard let used = try driver.pollUsed() else { Issue.record("nothing used"); return }
            #expect(used.token == token && used.length == 1)
            returned += 1
        }
        #expect(returned == 4 * size && driver.buffersInFlight == 0 && driver.violation == nil && device.violation == nil)
        #expect(driver.position.nextUsed == device.position.nextUsed)
    }

    @Test func theDeviceSideRefusesRingsItCannotUse() throws {
        let arena = try DMAArena(size: 1 << 16)
        let base = arena.deviceBase
        #expect(throws: DeviceQueueSetupError.invalidSize(6, packed: false)) {
            _ = try DeviceQueue(packed: false, queueSize: 6, descriptors: base, driver: base + 96, device: base + 256,
                                memory: arena, features: RingFeatures())
        }
        #expect(throws: DeviceQueueSetupError.invalidSize(0, packed: true)) {
            _ = try DeviceQueue(packed: true, queueSize: 0, descriptors: base, driver: base + 256, device: base + 260,
                                memory: arena, features: RingFeatures())
        }
        #expect(throws: DeviceQueueSetupError.outsideMemory(descriptors: base + (1 << 16) - 16, driver: base, device: base)) {
            _ = try DeviceQueue(packed: false, queueSize: 8, descriptors: base + (1 << 16) - 16, driver: base, device: base,
                                memory: arena, features: RingFeatures())
        }
        #expect(throws: DeviceQueueSetupError.misaligned(packed: false)) {
            _ = try DeviceQueue(packed: false, queueSize: 8, descriptors: base + 8, driver: base + 512, device: base + 1024,
                                memory: arena, features: RingFeatures())
        }
    }
}
