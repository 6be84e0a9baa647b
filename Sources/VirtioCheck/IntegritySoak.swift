import VirtioCore
import VirtioDrivers
import VirtioLoad
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// What a soak is asked to do.
public struct SoakOptions: Sendable {
    public var requests = 100_000
    /// Blocks of 4 KiB the requests spread over (each written once first, not counted).
    public var blocks = 1024
    /// Requests kept in flight per queue.
    public var depth = 16
    /// Chance per completed request that `injectFault` is called (0: no faults).
    public var faultRate = 0.0
    /// No completion for this long with requests in flight counts as a hung device (then recovery).
    public var timeoutMilliseconds = 200
    public var seed: UInt64 = 1
    public init() {}
}

/// What a soak found. `corrupt` and `lost` must be 0; `failed` counts requests given up on
/// (resubmitted `maxAttempts` times).
public struct SoakReport: Sendable, Codable {
    public var completed = 0, reads = 0, writes = 0
    /// Requests resubmitted after a recovery (they were in flight when the device broke a rule).
    public var retried = 0
    public var failed = 0
    /// Reads whose block carried the wrong block number, generation or checksum.
    public var corrupt = 0
    /// Requests still in flight when the soak stopped early (0 when it ran to the end).
    public var lost = 0
    public var recoveries = 0
    /// Why the soak ended before its count (nil: it ran to the end).
    public var stopped: String?
    /// Faults injected, by name.
    public var injected: [String: Int] = [:]
    /// Why each recovery happened: the rule the device broke (or the failure), counted.
    public var causes: [String: Int] = [:]
    public var queues = 0
    public var seconds = 0.0
}

/// Random reads and writes of self-checking blocks over every request queue of a block device,
/// one thread, with a fault injector called at random points. Every block carries its number,
/// a write generation and a checksum; a block is never in two requests at once, so each read has
/// exactly one right answer. When the device breaks a rule, hangs or asks for a reset, the driver
/// recovers (`BlockDevice.recover`) and resubmits what was in flight.
public final class IntegritySoak<T: VirtioTransport> {
    let blk: BlockDevice<T>
    let options: SoakOptions
    /// Called with a queue index when a fault should strike now; returns the fault's name, or nil
    /// when none could be armed there.
    public var injectFault: ((Int) -> String?)?
    /// Called about once a second with the report so far and the seconds since the start.
    public var progress: ((SoakReport, Double) -> Void)?

    struct InFlight { var block: Int; var write: Bool; var generation: UInt32; var since: UInt64; var attempts = 1 }

    /// A request resubmitted this often is given up (counted `failed`); this many recoveries end the soak.
    public static var maxAttempts: Int { 8 }
    var maxRecoveries: Int { max(1_000, options.requests / 100) }
    /// Requests per queue the ring can hold at once (3 descriptors each without indirect tables).
    var depth: Int

    var generation: [UInt32]
    var busy: [Bool]
    /// A write given up on may or may not have landed: its block accepts either generation.
    var writeUncertain: [Bool]
    var slots: [[InFlight?]]
    var buffers: DMARegion
    var rng: XorShift64
    var report = SoakReport()

    public init(_ blk: BlockDevice<T>, options: SoakOptions) throws(BlockError) {
        self.blk = blk
        self.options = options
        guard UInt64(options.blocks) * 8 <= blk.config.capacitySectors else {
            throw .invalidRequest("\(options.blocks) blocks of 4 KiB do not fit the device (\(blk.config.capacitySectors / 8) blocks)")
        }
        depth = max(1, min(options.depth, blk.queuePointer(0).pointee.singleSegmentRequestsFree))
        generation = Array(repeating: 0, count: options.blocks)
        busy = Array(repeating: false, count: options.blocks)
        slots = Array(repeating: Array(repeating: nil, count: depth), count: blk.queueCount)
        writeUncertain = Array(repeating: false, count: options.blocks)
        buffers = try blk.allocateBuffer(bytes: blk.queueCount * depth * 4096)
        rng = XorShift64(seed: options.seed | 1)
        report.queues = blk.queueCount
    }

    func random(_ n: Int) -> Int {
        Int(rng.below(UInt64(n)))
    }

    func buffer(_ q: Int, _ s: Int) -> DMARegion {
        buffers.slice(offset: (q * depth + s) * 4096, length: 4096)
    }

    /// Runs the soak. It ends early (`stopped` says why, what was in flight counts as lost) when the
    /// device cannot be recovered or keeps breaking; throws only when the first fill fails.
    public func run() throws(BlockError) -> SoakReport {
        let start = monotonicMilliseconds()
        // Every block gets a known generation first, through the synchronous helper.
        for b in 0..<options.blocks {
            generation[b] = 1
            let d = buffer(0, 0)
            BlockImage.fill(d, block: b, generation: 1)
            try blk.write(sector: UInt64(b * 8), from: d)
        }
        var submitted = 0
        var round = 0
        var lastProgress = monotonicMilliseconds()
        while report.completed + report.failed < options.requests {
            var trouble: CheckFinding?
            queues: for q in 0..<blk.queueCount {
                let queue = blk.queuePointer(q)
                for s in 0..<depth where slots[q][s] == nil && submitted < options.requests {
                    guard let block = pickIdleBlock() else { break }
                    let write = random(2) == 0
                    let gen = write ? generation[block] &+ 1 : generation[block]
                    slots[q][s] = InFlight(block: block, write: write, generation: gen, since: monotonicMilliseconds())
                    busy[block] = true
                    submitted += 1
                    do { try submit(q, s) } catch { trouble = Classify.finding(error); break queues }
                }
                queue.pointee.kick()
                while true {
                    let c: BlockCompletion?
                    do { c = try queue.pointee.poll() } catch { trouble = Classify.finding(error); break queues }
                    guard let c else { break }
                    let s = Int(c.tag)
                    guard c.result == .ok else {
                        let r = slots[q][s]!
                        trouble = Classify.finding(c.result, sector: UInt64(r.block * 8), what: r.write ? "write" : "read")
                        break queues
                    }
                    complete(q, s)
                    if options.faultRate > 0, let injectFault, Double(random(1 << 30)) < options.faultRate * Double(1 << 30) {
                        if let name = injectFault(random(blk.queueCount)) { report.injected[name, default: 0] += 1 }
                    }
                }
            }
            round &+= 1
            if trouble == nil, round & 15 == 0 {
                do { try blk.device.checkHealth() } catch { trouble = Classify.finding(error) }
                // A request the device keeps: the oldest in flight has waited too long.
                let now = monotonicMilliseconds()
                if let progress, now - lastProgress >= 1000 {
                    lastProgress = now
                    progress(report, Double(now - start) / 1000)
                }
                if trouble == nil, let oldest = slots.joined().compactMap({ $0?.since }).min(),
                   now - oldest > UInt64(options.timeoutMilliseconds) {
                    trouble = Classify.finding(BlockError.timeout(milliseconds: options.timeoutMilliseconds, what: "a request"))
                }
            }
            if let trouble {
                guard report.recoveries < maxRecoveries else {
                    report.stopped = "\(report.recoveries) recoveries: the device keeps breaking (last: \(trouble.message))"
                    break
                }
                do { try recover(trouble) } catch {
                    report.stopped = "recovery failed: \(error)"
                    break
                }
            }
        }
        report.lost = inFlight
        report.seconds = Double(monotonicMilliseconds() - start) / 1000
        return report
    }

    var inFlight: Int { slots.reduce(0) { $0 + $1.reduce(0) { $0 + ($1 == nil ? 0 : 1) } } }

    func pickIdleBlock() -> Int? {
        for _ in 0..<8 {
            let b = random(options.blocks)
            if !busy[b] { return b }
        }
        return nil
    }

    func submit(_ q: Int, _ s: Int) throws(BlockError) {
        let r = slots[q][s]!
        let d = buffer(q, s)
        // A read starts from a header no block has: a device that moves no data fails the check.
        if r.write { BlockImage.fill(d, block: r.block, generation: r.generation) } else { BlockImage.poison(d) }
        try blk.queuePointer(q).pointee.submit(r.write ? .write : .read, sector: UInt64(r.block * 8),
                                               data: BufferElement(address: d.deviceAddress, length: 4096), tag: UInt64(s))
    }

    func complete(_ q: Int, _ s: Int) {
        let r = slots[q][s]!
        if r.write {
            generation[r.block] = r.generation
            writeUncertain[r.block] = false
            report.writes += 1
        } else {
            let d = buffer(q, s)
            if !BlockImage.verify(d, block: r.block, generation: r.generation),
               !(writeUncertain[r.block] && BlockImage.verify(d, block: r.block, generation: r.generation &+ 1)) {
                report.corrupt += 1
            }
            report.reads += 1
        }
        busy[r.block] = false
        slots[q][s] = nil
        report.completed += 1
    }

    /// Resets and re-initialises the device, then resubmits every request that was in flight.
    func recover(_ why: CheckFinding) throws(BlockError) {
        report.recoveries += 1
        report.causes[why.clause, default: 0] += 1
        _ = try blk.recover()
        for q in 0..<blk.queueCount {
            for s in 0..<depth where slots[q][s] != nil {
                if slots[q][s]!.attempts >= Self.maxAttempts {
                    busy[slots[q][s]!.block] = false  // given up; a write's block keeps its old generation
                    if slots[q][s]!.write { writeUncertain[slots[q][s]!.block] = true }
                    slots[q][s] = nil
                    report.failed += 1
                    continue
                }
                report.retried += 1
                slots[q][s]!.attempts += 1
                slots[q][s]!.since = monotonicMilliseconds()
                try submit(q, s)
            }
            blk.queuePointer(q).pointee.kick()
        }
    }
}
