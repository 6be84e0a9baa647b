import VirtioRing

/// One thread plays both sides in turn, as `rb_run_single` does in C: the driver adds up to `burst`
/// buffers and decides about notifying, the device pops and returns all it finds and decides about
/// interrupting, the driver reaps. Deterministic: callgrind counts the same instructions each run.
/// Returns the buffers reaped, or -2 when a ring reported an error.
@inline(never)
func runSwiftSingle(packed: Bool, inOrder: Bool, queueSize: Int, buffers: Int, burst: Int) -> Int {
    let features = RingFeatures(indirect: false, eventIndex: false, inOrder: inOrder)
    let bytes = queueSize * 24 + 4096
    let ring = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
    defer { ring.deallocate() }
    ring.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    let base = UInt64(UInt(bitPattern: ring))
    let arena = DMAArena(external: ring, size: bytes, deviceBase: base)
    let areas = try! RingAreas(packed: packed, queueSize: queueSize)
    let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: 4)
    defer { scratch.deallocate() }
    var driver = DriverQueue(areas: areas, memory: ring, features: features, indirect: nil)
    var device = try! DeviceQueue(packed: packed, queueSize: queueSize, descriptors: base + UInt64(areas.descriptors),
                                  driver: base + UInt64(areas.driver), device: base + UInt64(areas.device),
                                  memory: arena, features: features)
    return turns(&driver, &device, buffers: buffers, burst: burst, scratch: scratch)
}

@inline(never)
func turns<D: DriverRing & ~Copyable, V: DeviceRing & ~Copyable>(_ d: inout D, _ v: inout V, buffers: Int, burst: Int,
                                                                  scratch: UnsafeMutableBufferPointer<ChainElement>) -> Int {
    d.disableUsedNotifications()  // poll mode both ways
    v.disableAvailNotifications()
    var sent = 0, got = 0, events = 0
    let element = BufferElement(address: 0x1_0000_0000, length: 64)
    do {
        while got < buffers {
            var k = 0
            // As rb_run_single: a full ring ends the burst through add's own check (.full).
            while k < burst, sent < buffers, (try? d.add(element, deviceWritable: true)) != nil {
                sent &+= 1
                k &+= 1
            }
            if d.needsNotification() { events &+= 1 }
            while let chain = try v.popAvailable(into: scratch) {
                v.pushUsed(chain, length: UInt32(truncatingIfNeeded: chain.writableLength))
            }
            if v.needsInterrupt() { events &+= 1 }
            while try d.pollUsed() != nil { got &+= 1 }
        }
    } catch {
        return -2
    }
    _ = events
    return got
}
