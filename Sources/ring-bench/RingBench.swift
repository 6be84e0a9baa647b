import ArgumentParser
import CRingBaseline
import CShim
import Foundation

/// ring-bench: Swift rings against the same algorithms in C, two pinned threads, in alternating rounds.
@main
struct RingBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ring-bench",
        abstract: "Two-thread ring benchmark (Linux tools/virtio/ringtest style): Swift VirtioRing vs a C baseline.",
        discussion: """
            Each round runs the C baseline and the Swift rings back to back (order alternating), so the
            ratio compares runs that saw the same machine state. Absolute times on a VM move between
            modes; trust the per-round ratios.
            """)

    @Flag(help: "Print JSON instead of a table.") var json = false
    @Flag(help: "A short run (1M buffers, 3 rounds).") var quick = false
    @Option(help: "Buffers per run.") var buffers: Int?
    @Option(help: "Rounds per layout (each round runs C and Swift once).") var rounds: Int?
    @Option(help: "Queue size (a power of two, for split).") var queueSize = 256
    @Option(help: "Layouts to run (comma-separated): packed, packed-inorder, split, split-inorder.")
    var layouts = "packed,packed-inorder,split,split-inorder"
    @Flag(name: .customLong("single-thread"), help: "One thread plays both sides in turn (for instruction counts under callgrind: tools/ring-callgrind).")
    var singleThread = false
    @Option(help: "With --single-thread: which implementation runs: swift, c (queue state in locals, which the compiler keeps in registers), or c-heap (state in heap structs behind pointers, as a driver keeps it).")
    var side = "swift"
    @Option(help: "With --single-thread: buffers the driver adds per turn.") var burst = 32
    @Flag(name: .customLong("latency-probe"), help: "Only measure the core-to-core round trip (ns, CPUs 0 and 1; median of 5 x 200k bounces) and print it.")
    var latencyProbe = false

    struct Variant { let name: String; let packed: Bool; let inOrder: Bool }
    static let variants = [Variant(name: "packed", packed: true, inOrder: false),
                           Variant(name: "packed-inorder", packed: true, inOrder: true),
                           Variant(name: "split", packed: false, inOrder: false),
                           Variant(name: "split-inorder", packed: false, inOrder: true)]

    func validate() throws {
        guard (1...32768).contains(queueSize), queueSize & (queueSize - 1) == 0 else {
            throw ValidationError("--queue-size must be a power of two in 1...32768 (split rings need one)")
        }
        for name in layouts.split(separator: ",") where !Self.variants.contains(where: { $0.name == name }) {
            throw ValidationError("unknown layout '\(name)'; use packed, packed-inorder, split, split-inorder")
        }
        if let b = buffers, b < 1000 { throw ValidationError("--buffers must be at least 1000") }
        if let r = rounds, r < 1 { throw ValidationError("--rounds must be at least 1") }
        guard ["swift", "c", "c-heap"].contains(side) else { throw ValidationError("--side must be swift, c or c-heap") }
        guard (1...queueSize).contains(burst) else { throw ValidationError("--burst must be 1...queue size") }
    }

    func run() throws {
        if singleThread { return try runSingle() }
        if latencyProbe { return try runLatencyProbe() }
        let count = buffers ?? (quick ? 1_000_000 : 10_000_000)
        let roundCount = rounds ?? (quick ? 3 : 5)
        let cpus = cshim_allowed_cpus()
        let (driverCPU, deviceCPU): (Int32, Int32) = cpus >= 2 ? (0, 1) : (0, 0)
        if cpus < 2 { print("warning: only one CPU available; both threads share it") }
        let wanted = Set(layouts.split(separator: ",").map(String.init))
        var reports: [String: LayoutReport] = [:]
        var rows: [String] = []
        for v in Self.variants where wanted.contains(v.name) {
            var swiftTimes: [Double] = [], cTimes: [Double] = [], ratios: [Double] = [], allocs: [Double] = []
            for round in 0..<roundCount {
                var s = SwiftRunResult(nanosecondsPerBuffer: 0, allocationsPerBuffer: 0, failed: false)
                var c = 0.0
                let swiftFirst = round % 2 == 1
                if swiftFirst { s = runSwift(packed: v.packed, inOrder: v.inOrder, queueSize: queueSize, buffers: count, driverCPU: driverCPU, deviceCPU: deviceCPU) }
                c = rb_run(v.packed ? 1 : 0, v.inOrder ? 1 : 0, Int32(queueSize), count, driverCPU, deviceCPU)
                if !swiftFirst { s = runSwift(packed: v.packed, inOrder: v.inOrder, queueSize: queueSize, buffers: count, driverCPU: driverCPU, deviceCPU: deviceCPU) }
                guard !s.failed, c > 0 else { throw RingBenchError.runFailed(v.name, swift: s.failed, c: c) }
                swiftTimes.append(s.nanosecondsPerBuffer)
                cTimes.append(c)
                ratios.append(s.nanosecondsPerBuffer / c)
                allocs.append(s.allocationsPerBuffer)
            }
            let entry = (name: v.name, swift: median(swiftTimes), c: median(cTimes), ratio: median(ratios), allocs: allocs.max() ?? 0)
            reports[entry.name] = LayoutReport(swiftNsPerBuffer: rounded(entry.swift), cNsPerBuffer: rounded(entry.c),
                                               swiftOverC: rounded(entry.ratio), allocationsPerBuffer: rounded(entry.allocs, 6),
                                               ratios: ratios.map { rounded($0) }, rounds: roundCount, buffers: count)
            rows.append("\(pad(entry.name, 16)) \(pad(fmt(entry.swift), 10)) \(pad(fmt(entry.c), 10)) \(pad(fmt(entry.ratio), 8)) "
                + "\(fmt(entry.allocs, 6))   [\(ratios.map { fmt($0) }.joined(separator: " "))]")
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            e.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try e.encode(BenchReport(queueSize: queueSize, layouts: reports)), as: UTF8.self))
        } else {
            print("ring \(queueSize), \(count) buffers per run, \(roundCount) rounds, threads on CPUs \(driverCPU)/\(deviceCPU)")
            print("\(pad("layout", 16)) \(pad("swift ns", 10)) \(pad("C ns", 10)) \(pad("swift/C", 8)) allocs/buf   per-round ratios")
            rows.forEach { print($0) }
        }
    }
}

extension RingBench {
    /// The figure benchmark scripts record next to each round: this VM's vCPU-to-vCPU latency moves between modes.
    func runLatencyProbe() throws {
        guard cshim_allowed_cpus() >= 2 else { throw ValidationError("--latency-probe needs two CPUs") }
        let samples = (0..<5).map { _ in rb_latency_probe(0, 1, 200_000) }
        guard samples.allSatisfy({ $0 > 0 }) else { throw ValidationError("latency probe: could not start its thread") }
        print(json ? "{\"roundTripNs\": \(rounded(median(samples)))}" : "core-to-core round trip: \(fmt(median(samples))) ns")
    }

    /// `--single-thread`: each layout asked for, one side, no timing worth trusting (count instructions).
    func runSingle() throws {
        let count = buffers ?? 1_000_000
        let wanted = Set(layouts.split(separator: ",").map(String.init))
        for v in Self.variants where wanted.contains(v.name) {
            let (p, o, n, b) = (Int32(v.packed ? 1 : 0), Int32(v.inOrder ? 1 : 0), Int32(queueSize), Int32(burst))
            let got = switch side {
            case "c": rb_run_single(p, o, n, count, b)
            case "c-heap": rb_run_single_heap(p, o, n, count, b)
            default: runSwiftSingle(packed: v.packed, inOrder: v.inOrder, queueSize: queueSize, buffers: count, burst: burst)
            }
            guard got == count else { throw RingBenchError.runFailed(v.name, swift: side == "swift", c: Double(got)) }
            print("single-thread \(v.name) \(side): \(got) buffers reaped, queue \(queueSize), burst \(burst)")
        }
    }
}

/// `--json`: one entry per layout, medians over the rounds and every per-round ratio.
struct BenchReport: Encodable {
    let queueSize: Int
    let layouts: [String: LayoutReport]
}

/// One layout's figures (ns per buffer, Swift over C, allocations per buffer).
struct LayoutReport: Encodable {
    let swiftNsPerBuffer: Double
    let cNsPerBuffer: Double
    let swiftOverC: Double
    let allocationsPerBuffer: Double
    let ratios: [Double]
    let rounds: Int
    let buffers: Int
}

enum RingBenchError: Error, CustomStringConvertible {
    case runFailed(String, swift: Bool, c: Double)
    var description: String {
        switch self {
        case let .runFailed(name, swift, c): "\(name): a ring reported an error (swift failed: \(swift), C result: \(c))"
        }
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func rounded(_ x: Double, _ digits: Int = 3) -> Double {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    return (x * p).rounded() / p
}

func fmt(_ x: Double, _ digits: Int = 3) -> String { "\(rounded(x, digits))" }

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
