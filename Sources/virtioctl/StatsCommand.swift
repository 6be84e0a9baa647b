import ArgumentParser
import Foundation
import VirtioCore

enum StatsOutput: String, ExpressibleByArgument, CaseIterable {
    case table, json, prometheus
}

extension VirtioCtl {
    /// `virtioctl stats PATH`: reads a statistics region, in the manner of kvm_stat and iostat.
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a statistics region written by `virtioctl attach --stats-file`: totals, per-second rates, histogram percentiles.",
            discussion: "A region whose writer is gone (or silent for 5 s) is reported stale, exit status 2. Exit 1: no region or a malformed one.")

        @Argument(help: "The region file.") var path: String
        @Option(help: "Print every SECONDS seconds with rates from the deltas (until interrupted).") var watch: Double?
        @Flag(help: "Print once and exit (the default without --watch).") var once = false
        @Option(help: "With --watch: stop after this many reports.") var count: Int?
        @Option(name: [.short, .long], help: "Output: table, json or prometheus (text exposition format 0.0.4).")
        var output: StatsOutput = .table

        func validate() throws {
            if let watch, !(watch >= 0.05 && watch <= 3600) { throw ValidationError("--watch must be 0.05...3600 seconds") }
            if once && watch != nil { throw ValidationError("--once and --watch exclude each other") }
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        }

        func run() throws {
            var reader = try StatsRegionReader(path: path)
            var previous: (StatsSnapshot, UInt64)?
            var reports = 0
            while true {
                if let why = reader.staleReason {
                    if why.contains("replaced"), let fresh = try? StatsRegionReader(path: path) {
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
    }
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
        for d in reader.layout.descriptors.dropFirst(3) {
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
        for s in stats {
            var line = s.name.padding(toLength: 34, withPad: " ", startingAt: 0)
            if let v = s.value {
                line += String(v).leftPad(18)
                if let r = s.ratePerSecond { line += String(format: "%14.1f", r) }
            } else if let c = s.count {
                let p = s.percentilesNs ?? [:]
                line += "n=\(c)".leftPad(18) + "  p50 \(p["p50"].map(ns) ?? "-") p99 \(p["p99"].map(ns) ?? "-") p99.9 \(p["p99.9"].map(ns) ?? "-")"
            }
            Swift.print(line)
        }
    }

    func ns(_ v: UInt64) -> String {
        v >= 1_000_000 ? "\(v / 1_000_000)ms" : v >= 1000 ? "\(v / 1000)us" : "\(v)ns"
    }

    /// Prometheus text exposition: `virtio_<name>` families, per-queue values labelled `queue`,
    /// counters with `_total`, time in seconds, log histograms as cumulative `le` buckets.
    func prometheus() -> String {
        struct Family { var type: String; var help: String; var lines: [String] }
        var families: [(String, Family)] = []
        func add(_ name: String, _ type: String, _ help: String, _ line: String) {
            if let i = families.firstIndex(where: { $0.0 == name }) { families[i].1.lines.append(line) } else {
                families.append((name, Family(type: type, help: help, lines: [line])))
            }
        }
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
        func number(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d) }
        for s in stats {
            var base = s.name
            var labels = "region=\"\(escape(id))\""
            if base.hasPrefix("queue"), let us = base.firstIndex(of: "_"), let q = Int(base[base.index(base.startIndex, offsetBy: 5)..<us]) {
                labels += ",queue=\"\(q)\""
                base = "queue" + base[us...]
            }
            if base.hasSuffix("_ns") { base.removeLast(3) }
            let scale = s.unit == "seconds" ? pow(10, Double(s.exponent)) : 1
            if s.unit == "seconds" { base += "_seconds" } else if s.unit == "bytes", !base.hasSuffix("_bytes") { base += "_bytes" }
            let name = "virtio_" + base.map { $0.isLetter || $0.isNumber || $0 == "_" ? $0 : "_" }.map(String.init).joined()
            if let v = s.value {
                if s.type == "cumulative" {
                    add(name + "_total", "counter", "\(s.name) (cumulative)", "\(name)_total{\(labels)} \(number(Double(v) * scale))")
                } else {
                    add(name, "gauge", "\(s.name) (\(s.type))", "\(name){\(labels)} \(number(Double(v) * scale))")
                }
            } else if let buckets = s.buckets, s.type == "log-hist" {
                var cumulative: UInt64 = 0
                for (i, n) in buckets.enumerated() {
                    cumulative &+= n
                    let le = i == 0 ? 0 : Double(UInt64(1) << UInt64(min(i, 63))) * scale
                    if i < buckets.count - 1 {
                        add(name, "histogram", "\(s.name) (log2 buckets)", "\(name)_bucket{\(labels),le=\"\(le)\"} \(cumulative)")
                    }
                }
                add(name, "histogram", "", "\(name)_bucket{\(labels),le=\"+Inf\"} \(cumulative)")
                add(name, "histogram", "", "\(name)_count{\(labels)} \(cumulative)")
            }
        }
        var out = ""
        for (name, f) in families {
            out += "# HELP \(name) \(f.help)\n# TYPE \(name) \(f.type)\n"
            for l in f.lines { out += l + "\n" }
        }
        if let stale { out += "# region is stale: \(stale)\n" }
        return out
    }
}
