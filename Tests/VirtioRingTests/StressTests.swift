import Synchronization
import TestSupport
import Testing
import VirtioCore
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a new POSIX thread; `join` waits for it.
final class TestThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<TestThread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }
    func join() { pthread_join(thread, nil) }
}

/// Driver and device on two threads over shared memory: the orderings the spec's
/// barriers give must hold on real concurrency, not only in lock-step tests.
@Suite("Two-thread stress")
struct StressTests {
    static let buffers = 200_000

    @Test("driver and device threads", arguments: Layout.allCases, [false, true])
    func twoThreads(layout: Layout, inOrder: Bool) throws {
        let size = layout == .packed ? 100 : 128
        let features = RingFeatures(indirect: true, eventIndex: true, inOrder: inOrder)
        let arena = try DMAArena(size: 4 << 20)
        let ringBytes = layout == .packed ? try PackedLayout(queueSize: size).totalSize : try SplitLayout(queueSize: size).totalSize
        let ring = try arena.allocate(length: ringBytes, alignment: 4096)
        let pool = try arena.allocate(length: IndirectPool.size(queueSize: size, maxElements: 4), alignment: 16)
        let data = try arena.allocate(length: size * 4 * 64, alignment: 64)
        let buffers = Self.buffers
        let ready = Atomic<Bool>(false)
        let failures = Atomic<Int>(0)
        let ringAddress = UInt(bitPattern: ring.pointer)
        let poolRegion = pool
        let dataRegion = data

        // The driver: chains of 1...4 elements, each writable element tagged so the device's
        // used length and the data it wrote can be checked on return.
        let driverThread = TestThread {
            let memory = UnsafeMutableRawPointer(bitPattern: ringAddress)!
            let indirect = IndirectPool(area: poolRegion.area, maxElements: 4)
            func drive<D: DriverRing & ~Copyable>(_ q: inout D) {
                ready.store(true, ordering: .releasing)
                var rng = SplitMix(seed: 5)
                var sent = 0, got = 0
                var expectedLength = [UInt32](repeating: 0, count: size)
                var lastProgress = monotonicNanoseconds()
                var next = 1 + rng.below(4)
                while got < buffers {
                    // Room is checked first: an add that throws .full would cost a backtrace per
                    // burst (Swift Testing captures one for every thrown error), seconds under load.
                    while sent < buffers, q.freeDescriptors >= next {
                        let n = next
                        let readable = rng.below(n)
                        var r: [BufferElement] = [], w: [BufferElement] = []
                        for k in 0..<n {
                            let e = BufferElement(address: dataRegion.deviceAddress, length: UInt32(8 + k))
                            if k < readable { r.append(e) } else { w.append(e) }
                        }
                        guard let token = try? q.add(readable: r.span, writable: w.span) else { break }
                        expectedLength[Int(token)] = w.reduce(0) { $0 + $1.length }
                        sent += 1
                        next = 1 + rng.below(4)
                    }
                    _ = q.needsNotification()
                    let before = got
                    do {
                        while let u = try q.pollUsed() {
                            if u.length != expectedLength[Int(u.token)] { failures.add(1, ordering: .relaxed) }
                            got += 1
                        }
                    } catch {
                        failures.add(1000, ordering: .relaxed)
                        return
                    }
                    // Never wait forever: not on a device that gave up, nor on one that stopped.
                    if got != before { lastProgress = monotonicNanoseconds(); continue }
                    if failures.load(ordering: .relaxed) >= 10_000 { return }
                    if monotonicNanoseconds() - lastProgress > 60_000_000_000 { failures.add(100_000, ordering: .relaxed); return }
                }
            }
            if layout == .packed {
                var q = PackedDriverQueue(layout: try! PackedLayout(queueSize: size), memory: memory, features: features, indirect: indirect)
                drive(&q)
            } else {
                var q = SplitDriverQueue(layout: try! SplitLayout(queueSize: size), memory: memory, features: features, indirect: indirect)
                drive(&q)
            }
        }
        // The device: pops each chain, checks it, and returns it used in full.
        let deviceThread = TestThread {
            while !ready.load(ordering: .acquiring) {}
            let memory = UnsafeMutableRawPointer(bitPattern: ringAddress)!
            let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: 8)
            defer { scratch.deallocate() }
            func serve<V: DeviceRing & ~Copyable>(_ q: inout V) {
                var done = 0
                var spins = 0
                var waitingSince: UInt64 = 0
                while done < buffers {
                    do {
                        guard let c = try q.popAvailable(into: scratch) else {
                            // Gives up after 60 s without a buffer (a clock, not a spin count: a
                            // driver thread descheduled on a loaded machine is not a failure).
                            spins += 1
                            if spins == 1 { waitingSince = monotonicNanoseconds() }
                            if spins & 0xFFFF == 0 {
                                if monotonicNanoseconds() - waitingSince > 60_000_000_000 { failures.add(10_000, ordering: .relaxed); return }
                                if failures.load(ordering: .relaxed) >= 1000 { return }  // the driver stopped
                            }
                            continue
                        }
                        spins = 0
                        for k in 0..<c.elementCount where scratch[k].length != UInt32(8 + k) {
                            failures.add(1, ordering: .relaxed)
                        }
                        q.pushUsed(c, length: UInt32(c.writableLength))
                        _ = q.needsInterrupt()
                        done += 1
                    } catch {
                        failures.add(1000, ordering: .relaxed)
                        return
                    }
                }
            }
            if layout == .packed {
                var q = PackedDeviceQueue(layout: try! PackedLayout(queueSize: size), memory: memory, deviceMemory: arena, features: features)
                serve(&q)
            } else {
                var q = SplitDeviceQueue(layout: try! SplitLayout(queueSize: size), memory: memory, deviceMemory: arena, features: features)
                serve(&q)
            }
        }
        driverThread.join()
        deviceThread.join()
        #expect(failures.load(ordering: .relaxed) == 0)
    }
}
