import CMallocCount
import Synchronization
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// The result of one two-thread run of the Swift rings.
struct SwiftRunResult {
    var nanosecondsPerBuffer: Double
    /// Heap allocations per buffer in the steady state (after the first tenth).
    var allocationsPerBuffer: Double
    var failed: Bool
}

/// Shared state between the two threads of a run.
final class RunState: Sendable {
    let ready = Atomic<Bool>(false)
    let stop = Atomic<Bool>(false)
    let failed = Atomic<Bool>(false)
    let allocations = Atomic<UInt64>(0)
    let measured = Atomic<Int>(0)
}

/// The same loop as the C baseline: the driver adds one-descriptor buffers while there is
/// room, decides about notifying, and reaps; the device pops each buffer and marks it used.
/// Poll mode: each side has switched off the other's notifications.
func runSwift(packed: Bool, inOrder: Bool, queueSize: Int, buffers: Int, driverCPU: Int32, deviceCPU: Int32) -> SwiftRunResult {
    let features = RingFeatures(indirect: false, eventIndex: false, inOrder: inOrder)
    let bytes = queueSize * 24 + 4096
    let ring = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
    defer { ring.deallocate() }
    ring.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    let address = UInt(bitPattern: ring)
    let state = RunState()
    // The device reaches the ring at device addresses equal to the host ones (an identity arena).
    let arena = DMAArena(external: ring, size: bytes, deviceBase: UInt64(address))
    let areas = try! RingAreas(packed: packed, queueSize: queueSize)

    // Both sides run the layout-neutral queues, as the driver and the software device do.
    let device = PinnedThread(cpu: deviceCPU) {
        while !state.ready.load(ordering: .acquiring) {}
        let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: 4)
        defer { scratch.deallocate() }
        let base = UInt64(address)
        var q = try! DeviceQueue(packed: packed, queueSize: queueSize, descriptors: base + UInt64(areas.descriptors),
                                 driver: base + UInt64(areas.driver), device: base + UInt64(areas.device),
                                 memory: arena, features: features)
        serve(&q, buffers: buffers, scratch: scratch, state: state)
        while !state.stop.load(ordering: .acquiring) {}
    }
    let start = nowNanoseconds()
    let driver = PinnedThread(cpu: driverCPU) {
        var q = DriverQueue(areas: areas, memory: UnsafeMutableRawPointer(bitPattern: address)!, features: features,
                            indirect: nil)
        drive(&q, buffers: buffers, state: state)
    }
    driver.join()
    let elapsed = nowNanoseconds() - start
    device.join()
    let measured = state.measured.load(ordering: .relaxed)
    return SwiftRunResult(nanosecondsPerBuffer: Double(elapsed) / Double(buffers),
                          allocationsPerBuffer: Double(state.allocations.load(ordering: .relaxed)) / Double(max(measured, 1)),
                          failed: state.failed.load(ordering: .relaxed))
}

@inline(never)
func drive<D: DriverRing & ~Copyable>(_ q: inout D, buffers: Int, state: RunState) {
    q.disableUsedNotifications()  // poll mode
    state.ready.store(true, ordering: .releasing)
    var sent = 0
    var got = 0
    var notifies = 0
    let warmup = buffers / 10
    var allocationsAtWarmup: UInt64 = 0
    let element = BufferElement(address: 0x1_0000_0000, length: 64)
    while got < buffers {
        // Check for room first (as DPDK callers do); a throw per fill would hit the runtime's willThrow hook.
        while sent < buffers, q.freeDescriptors > 0, (try? q.add(element, deviceWritable: true)) != nil { sent &+= 1 }
        if q.needsNotification() { notifies &+= 1 }
        do {
            while try q.pollUsed() != nil {
                got &+= 1
                if got == warmup { allocationsAtWarmup = mc_count() }
            }
        } catch {
            state.failed.store(true, ordering: .relaxed)
            break
        }
    }
    state.allocations.store(mc_count() &- allocationsAtWarmup, ordering: .relaxed)
    state.measured.store(buffers - warmup, ordering: .relaxed)
    state.stop.store(true, ordering: .releasing)
    _ = notifies
}

@inline(never)
func serve<V: DeviceRing & ~Copyable>(_ q: inout V, buffers: Int, scratch: UnsafeMutableBufferPointer<ChainElement>, state: RunState) {
    q.disableAvailNotifications()  // poll mode
    var done = 0
    while done < buffers && !state.failed.load(ordering: .relaxed) {
        do {
            while let chain = try q.popAvailable(into: scratch) {
                q.pushUsed(chain, length: UInt32(truncatingIfNeeded: chain.writableLength))
                done &+= 1
            }
        } catch {
            state.failed.store(true, ordering: .relaxed)
            return
        }
        _ = q.needsInterrupt()
    }
}
