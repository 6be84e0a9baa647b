import CMallocCount
import Synchronization
import VirtioCore
import VirtioDrivers
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// The I/O mix of a load (fio's names).
public enum BenchPattern: String, CaseIterable, Codable, Sendable {
    case randread, randwrite, randrw, read, write
    @inlinable public var random: Bool { self == .randread || self == .randwrite || self == .randrw }
}

/// xorshift64: the one cheap generator every load uses (bench workers, attach's load, the soak).
@frozen
public struct XorShift64: Sendable {
    public var state: UInt64
    /// A zero state would stay zero; it is nudged to 1.
    @inlinable public init(seed: UInt64) { state = seed == 0 ? 1 : seed }
    @inlinable @inline(__always)
    public mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    /// A value in 0..<n (n > 0).
    @inlinable @inline(__always)
    public mutating func below(_ n: UInt64) -> UInt64 { next() % n }
}

/// Where a pattern's next request goes: a slot (request-sized unit of the device) and whether it writes.
@frozen
public struct BlockOffsets: Sendable {
    public let pattern: BenchPattern
    public let slots: UInt64
    public var rng: XorShift64
    public var sequential: UInt64

    @inlinable
    public init(pattern: BenchPattern, slots: UInt64, seed: UInt64, start: UInt64 = 0) {
        self.pattern = pattern
        self.slots = max(slots, 1)
        rng = XorShift64(seed: seed)
        sequential = start
    }

    @inlinable @inline(__always)
    public mutating func next() -> (write: Bool, slot: UInt64) {
        let slot: UInt64
        if pattern.random {
            slot = rng.below(slots)
        } else {
            slot = sequential % slots
            sequential &+= 1
        }
        let write: Bool
        switch pattern {
        case .randread, .read: write = false
        case .randwrite, .write: write = true
        case .randrw: write = rng.state & (1 << 40) != 0
        }
        return (write, slot)
    }
}

/// Shared between the workers and the progress printer.
public final class BenchControl: Sendable {
    /// One worker's completion count (a class so an array can hold the atomic).
    public final class Counter: Sendable {
        public let value = Atomic<Int>(0)
    }
    public let stop = Atomic<Bool>(false)
    public let completed: [Counter]
    public init(workers: Int) {
        completed = (0..<workers).map { _ in Counter() }
    }
}

/// What one worker measured.
public struct WorkerResult: Sendable {
    public var ops = 0
    public var errors = 0
    public var firstError: String?
    public var steadyOps = 0
    public var steadyAllocations: UInt64 = 0
    public init() {}
}

/// Keeps `depth` requests in flight on one queue until told to stop; records each latency.
/// The loop allocates nothing: buffers, tags and timestamps are set up before it starts. The
/// clock is read once per batch of completions (SPDK's perf reads its ticks per poll the same
/// way): those completions and the requests that replace them share the reading, so a latency runs
/// from the batch that submitted a request to the batch that reaped it. (Two vDSO clock reads per
/// request were 22% of the driver's time over vhost-user.)
@inlinable
public func benchWorker<T: VirtioTransport>(queue: UnsafeMutablePointer<BlockQueue<T>>, worker: Int, buffers: DMARegion,
                                     pattern: BenchPattern, blockSize: Int, depth: Int, deviceBytes: UInt64,
                                     control: BenchControl, histogram: inout LatencyHistogram) -> WorkerResult {
    var result = WorkerResult()
    let slots = deviceBytes / UInt64(blockSize)
    let sectorsPerIO = UInt64(blockSize / 512)
    var offsets = BlockOffsets(pattern: pattern, slots: slots, seed: 0x9E37_79B9_7F4A_7C15 &+ UInt64(worker) &* 0xD1B5_4A32_D192_ED03,
                               start: UInt64(worker) &* (slots / 8))
    let started = UnsafeMutablePointer<UInt64>.allocate(capacity: depth)
    defer { started.deallocate() }
    let warmup = 2 * depth + 1000
    var allocationsAtWarmup: UInt64 = 0

    @inline(__always) func next() -> (VirtioDrivers.BlockOperation, UInt64) {
        let (write, slot) = offsets.next()
        return (write ? .write : .read, slot &* sectorsPerIO)
    }

    @inline(__always) func submit(_ tag: Int, at now: UInt64) -> Bool {
        let (op, sector) = next()
        let element = BufferElement(address: buffers.deviceAddress &+ UInt64(tag &* blockSize), length: UInt32(blockSize))
        started[tag] = now
        do { try queue.pointee.submit(op, sector: sector, data: element, tag: UInt64(tag)) } catch {
            if result.firstError == nil { result.firstError = "\(error)" }
            return false
        }
        return true
    }

    let first = monotonicNanoseconds()
    for tag in 0..<depth where !submit(tag, at: first) { return result }
    queue.pointee.kick()
    var inFlight = depth
    var stopping = false
    var idlePolls = 0
    var lastProgress = first
    while inFlight > 0 {
        var reaped = 0
        var now: UInt64 = 0
        while true {
            let c: BlockCompletion?
            do { c = try queue.pointee.poll() } catch {
                if result.firstError == nil { result.firstError = "\(error)" }
                return result
            }
            guard let c else { break }
            if reaped == 0 { now = monotonicNanoseconds() }  // once per batch (above)
            let tag = Int(c.tag)
            histogram.record(now &- started[tag])
            result.ops &+= 1
            if c.result != .ok {
                result.errors &+= 1
                if result.firstError == nil { result.firstError = "\(c.result)" }
            }
            if result.ops == warmup { allocationsAtWarmup = mc_thread_count() }
            reaped &+= 1
            if stopping || !submit(tag, at: now) { inFlight &-= 1 }
        }
        if reaped == 0 {
            // A device that stops completing must not hang the benchmark: give up after 10 s.
            idlePolls &+= 1
            if queue.pointee.interruptFD >= 0 {
                queue.pointee.waitForInterrupt(timeoutMilliseconds: 100)
                idlePolls = 0  // asleep, not spinning: check the clock on every wake
            }
            if idlePolls & 0xFFFF == 0 {
                let now = monotonicNanoseconds()
                if now &- lastProgress > 10_000_000_000 {
                    if result.firstError == nil { result.firstError = "no completion for 10 s with \(inFlight) request(s) in flight" }
                    return result
                }
            }
        } else {
            idlePolls = 0
            lastProgress = now
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
