import CMallocCount
import CShim
import Synchronization
import VirtioCore
import VirtioDrivers
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// The I/O mix of a benchmark (fio's names).
enum BenchPattern: String, CaseIterable, Codable {
    case randread, randwrite, randrw, read, write
    var random: Bool { self == .randread || self == .randwrite || self == .randrw }
}

@inline(__always)
func monotonicNanos() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
}

/// Shared between the workers and the progress printer.
final class BenchControl: Sendable {
    /// One worker's completion count (a class so an array can hold the atomic).
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }
    let stop = Atomic<Bool>(false)
    let completed: [Counter]
    init(workers: Int) {
        completed = (0..<workers).map { _ in Counter() }
    }
}

/// What one worker measured.
struct WorkerResult {
    var ops = 0
    var errors = 0
    var firstError: String?
    var steadyOps = 0
    var steadyAllocations: UInt64 = 0
}

/// Keeps `depth` requests in flight on one queue until told to stop; records each latency.
/// The loop allocates nothing: buffers, tags and timestamps are set up before it starts.
func benchWorker<T: VirtioTransport>(queue: UnsafeMutablePointer<BlockQueue<T>>, worker: Int, buffers: DMARegion,
                                     pattern: BenchPattern, blockSize: Int, depth: Int, deviceBytes: UInt64,
                                     control: BenchControl, histogram: inout LatencyHistogram) -> WorkerResult {
    var result = WorkerResult()
    let slots = deviceBytes / UInt64(blockSize)
    let sectorsPerIO = UInt64(blockSize / 512)
    var rng: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ UInt64(worker) &* 0xD1B5_4A32_D192_ED03
    var sequential = UInt64(worker) &* (slots / 8)
    let started = UnsafeMutablePointer<UInt64>.allocate(capacity: depth)
    defer { started.deallocate() }
    let warmup = 2 * depth + 1000
    var allocationsAtWarmup: UInt64 = 0

    @inline(__always) func next() -> (VirtioDrivers.BlockOperation, UInt64) {
        let slot: UInt64
        if pattern.random {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
            slot = rng % slots
        } else {
            slot = sequential % slots
            sequential &+= 1
        }
        let op: VirtioDrivers.BlockOperation
        switch pattern {
        case .randread, .read: op = .read
        case .randwrite, .write: op = .write
        case .randrw: op = rng & (1 << 40) == 0 ? .read : .write
        }
        return (op, slot &* sectorsPerIO)
    }

    @inline(__always) func submit(_ tag: Int) -> Bool {
        let (op, sector) = next()
        let element = BufferElement(address: buffers.deviceAddress &+ UInt64(tag &* blockSize), length: UInt32(blockSize))
        started[tag] = monotonicNanos()
        do { try queue.pointee.submit(op, sector: sector, data: element, tag: UInt64(tag)) } catch {
            if result.firstError == nil { result.firstError = "\(error)" }
            return false
        }
        return true
    }

    for tag in 0..<depth where !submit(tag) { return result }
    queue.pointee.kick()
    var inFlight = depth
    var stopping = false
    var idlePolls = 0
    var lastProgress = monotonicNanos()
    while inFlight > 0 {
        var reaped = 0
        while true {
            let c: BlockCompletion?
            do { c = try queue.pointee.poll() } catch {
                if result.firstError == nil { result.firstError = "\(error)" }
                return result
            }
            guard let c else { break }
            let now = monotonicNanos()
            let tag = Int(c.tag)
            histogram.record(now &- started[tag])
            result.ops &+= 1
            if c.result != .ok {
                result.errors &+= 1
                if result.firstError == nil { result.firstError = "\(c.result)" }
            }
            if result.ops == warmup { allocationsAtWarmup = mc_thread_count() }
            reaped &+= 1
            if stopping || !submit(tag) { inFlight &-= 1 }
        }
        if reaped == 0 {
            // A device that stops completing must not hang the benchmark: give up after 10 s.
            idlePolls &+= 1
            if queue.pointee.interruptFD >= 0 {
                queue.pointee.waitForInterrupt(timeoutMilliseconds: 100)
                idlePolls = 0  // asleep, not spinning: check the clock on every wake
            }
            if idlePolls & 0xFFFF == 0 {
                let now = monotonicNanos()
                if now &- lastProgress > 10_000_000_000 {
                    if result.firstError == nil { result.firstError = "no completion for 10 s with \(inFlight) request(s) in flight" }
                    return result
                }
            }
        } else {
            idlePolls = 0
            lastProgress = monotonicNanos()
        }
        if reaped > 0 {
            queue.pointee.kick()
            control.completed[worker].value.add(reaped, ordering: .relaxed)
            if !stopping && control.stop.load(ordering: .relaxed) { stopping = true }
        } else if !stopping && control.stop.load(ordering: .relaxed) {
            stopping = true
        }
    }
    if result.ops > warmup {
        result.steadyOps = result.ops - warmup
        result.steadyAllocations = mc_thread_count() &- allocationsAtWarmup
    }
    return result
}
