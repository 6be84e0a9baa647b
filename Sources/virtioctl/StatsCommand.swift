import ArgumentParser
import Foundation
import VirtioCore
import VirtioExporter

enum StatsOutput: String, ExpressibleByArgument, CaseIterable {
    case table, json, prometheus
}

extension VirtioCtl {
    /// `virtioctl stats PATH`: reads a statistics region, in the manner of kvm_stat and iostat.
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a statistics region written by `virtioctl attach --stats-file`: totals, per-second rates, histogram percentiles.",
            discussion: "A region whose writer is gone (or silent for 5 s) is reported stale, exit status 2. Exit 1: no region or a malformed one.")

        @Argument(help: "The region file; with --listen, any number of files and glob patterns (quote them), resolved again on every scrape.")
        var paths: [String]
        @Option(help: "Print every SECONDS seconds with rates from the deltas (until interrupted). On a terminal the table is redrawn in place: o switches the sort (rate or name), q quits.")
        var watch: Double?
        @Flag(help: "Print once and exit (the default without --watch).") var once = false
        @Option(help: "With --watch or --log: stop after this many reports.") var count: Int?
        @Option(name: [.short, .long], help: "Output: table, json or prometheus (text exposition format 0.0.4).")
        var output: StatsOutput = .table
        @Option(help: "The live view's first sort: rate (highest first) or name.") var sort: StatsSort = .rate
        @Flag(help: "CSV lines, like kvm_stat --log: a header of names, then a line every --watch seconds (1 by default) of per-second rates (counters, histogram counts) and values (gauges).")
        var log = false
        @Option(help: "Serve /metrics for Prometheus on HOST:PORT ([V6]:PORT; PORT alone binds 127.0.0.1) until ended, for every region given.")
        var listen: String?

        func validate() throws {
            if let watch, !(watch >= 0.05 && watch <= 3600) { throw ValidationError("--watch must be 0.05...3600 seconds") }
            if once && watch != nil { throw ValidationError("--once and --watch exclude each other") }
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
            if listen != nil {
                if watch != nil || once || count != nil || log { throw ValidationError("--listen serves until ended: drop --watch, --once, --count and --log") }
                _ = try parseListenAddress(listen!)
            } else if paths.count != 1 {
                throw ValidationError("give one region file (several, or glob patterns, only with --listen)")
            }
            if log && output != .table { throw ValidationError("--log prints CSV: drop -o \(output.rawValue)") }
        }

        func run() throws {
            // Started by a supervisor (or Foundation's Process) with SIGTERM blocked, the exporter
            // and the live view would outlive a stop request.
            unblockStopSignals()
            if let listen { return try serve(listen) }
            let path = paths[0]
            var reader = try StatsRegionReader(path: path)
            if log {
                let code = try StatsLog(reader: reader, interval: watch ?? 1, count: count).run()
                if code != 0 { throw ExitCode(code) }
                return
            }
            if let watch, output == .table, isatty(STDOUT_FILENO) == 1, isatty(STDIN_FILENO) == 1 {
                var view = LiveStatsView(reader: reader, interval: watch, count: count, byRate: sort == .rate)
                let code = try view.run()
                if code != 0 { throw ExitCode(code) }
                return
            }
            var previous: (StatsSnapshot, UInt64)?
            var reports = 0
            while true {
                if let why = reader.staleReason {
                    if let fresh = reader.reopenedIfReplaced() {
                        reader = fresh
                        previous = nil
                        continue
                    }
                    let snap = try? reader.snapshot()
                    try StatsReport(reader: reader, snapshot: snap, previous: nil, stale: why).print(output)
                    throw ExitCode(2)
                }
                let snap = try reader.snapshot()
                let now = monotonicNanoseconds()
                let report = StatsReport(reader: reader, snapshot: snap,
                                         previous: previous.map { ($0.0, Double(now - $0.1) / 1e9) }, stale: nil)
                try report.print(output)
                reports += 1
                guard let watch, !once, reports < (count ?? .max) else { return }
                previous = (snap, now)
                Thread.sleep(forTimeInterval: watch)
            }
        }

        /// `--listen`: the exporter, until the process is ended.
        func serve(_ listen: String) throws {
            let (host, port) = try parseListenAddress(listen)
            let regions = ExportedRegions(patterns: paths)
            let found = regions.paths().filter { FileManager.default.fileExists(atPath: $0) }
            note("exporting \(found.count) region(s) now (\(paths.joined(separator: " "))), resolved again on every scrape")
            do {
                try MetricsServer(host: host, port: port) { regions.exposition() }.run { url in note("listening on \(url)") }
            } catch {
                throw CLIError(error.description)
            }
        }
    }
}

enum StatsSort: String, ExpressibleByArgument, CaseIterable {
    case rate, name
}

/// One report: every statistic's value, its rate over the last interval, histogram percentiles.
struct StatsReport: Encodable {
    struct Stat: Encodable {
        let name: String
        let type: String
        let unit: String
        let exponent: Int16
        var value: UInt64?
        var ratePerSecond: Double?
        var buckets: [UInt64]?
        var count: UInt64?
        var percentilesNs: [String: UInt64]?
    }
    let path: String
    let id: String
    let writerPid: Int32?
    let stale: String?
    let intervalSeconds: Double?
    let stats: [Stat]

    init(reader: StatsRegionReader, snapshot: StatsSnapshot?, previous: (StatsSnapshot, Double)?, stale: String?) {
        path = reader.path
        id = reader.layout.id
        self.stale = stale
        writerPid = snapshot?.writerPID
        intervalSeconds = previous?.1
        var out: [Stat] = []
        for d in reader.layout.statistics {
            var s = Stat(name: d.name, type: d.type.name, unit: "\(d.unit)", exponent: d.exponent)
            guard let snapshot else { out.append(s); continue }
            let values = (0..<Int(d.size)).map { snapshot.value(d, $0) }
            if d.type == .logHistogram || d.type == .linearHistogram {
                s.buckets = values
                s.count = values.reduce(0, &+)
                // Percentiles over the interval when watching, else over everything.
                var window = values
                if let (p, _) = previous { window = zip(values, (0..<Int(d.size)).map { p.value(d, $0) }).map { $0 &- $1 } }
                if d.type == .logHistogram { s.percentilesNs = Self.percentiles(window) }
            } else {
                s.value = values[0]
                if d.type == .cumulative, let (p, dt) = previous, dt > 0 {
                    s.ratePerSecond = Double(values[0] &- p.value(d)) / dt
                }
            }
            out.append(s)
        }
        stats = out
    }

    /// p50/p90/p99/p99.9 as the upper bound of the log2 bucket they fall in (bucket i: [2^(i-1), 2^i)).
    static func percentiles(_ buckets: [UInt64]) -> [String: UInt64] {
        let total = buckets.reduce(0, &+)
        guard total > 0 else { return [:] }
        var out: [String: UInt64] = [:]
        for (label, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            var seen: UInt64 = 0
            for (i, n) in buckets.enumerated() {
                seen &+= n
                if Double(seen) >= p * Double(total) { out[label] = i == 0 ? 0 : UInt64(1) << UInt64(min(i, 63)); break }
            }
        }
        return out
    }

    func print(_ format: StatsOutput) throws {
        switch format {
        case .json: try printJSON(self)
        case .prometheus: Swift.print(prometheus(), terminator: "")
        case .table: table()
        }
    }

    func table() {
        Swift.print("\(id)  (\(path), writer \(writerPid.map(String.init) ?? "?"))" + (stale.map { "  STALE: \($0)" } ?? ""))
        Swift.print("name".padding(toLength: 34, withPad: " ", startingAt: 0) + "value".leftPad(18) + (intervalSeconds != nil ? "rate/s".leftPad(14) : ""))
        for s in stats { Swift.print(row(s)) }
    }

    /// One statistic as a table row: name, value and rate, or a histogram's count and percentiles.
    func row(_ s: Stat) -> String {
        var line = s.name.padding(toLength: 34, withPad: " ", startingAt: 0)
        if let v = s.value {
            line += String(v).leftPad(18)
            if let r = s.ratePerSecond { line += String(format: "%14.1f", r) }
        } else if let c = s.count {
            let p = s.percentilesNs ?? [:]
            line += "n=\(c)".leftPad(18) + "  p50 \(p["p50"].map(ns) ?? "-") p99 \(p["p99"].map(ns) ?? "-") p99.9 \(p["p99.9"].map(ns) ?? "-")"
        }
        return line
    }

    func ns(_ v: UInt64) -> String {
        v >= 1_000_000 ? "\(v / 1_000_000)ms" : v >= 1000 ? "\(v / 1000)us" : "\(v)ns"
    }

    /// This report alone in the Prometheus text exposition format (see `PrometheusExposition`).
    func prometheus() -> String {
        var e = PrometheusExposition()
        e.add(self)
        return e.text
    }
}
