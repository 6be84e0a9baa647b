import Foundation
import VirtioCore

/// `stats --watch` on a terminal, after kvm_stat: one table redrawn in place every interval with
/// a header naming the device and its writer's state; `o` switches the sort, `q` (or ^C) quits.
struct LiveStatsView {
    var reader: StatsRegionReader
    let interval: Double
    let count: Int?
    var byRate: Bool

    /// The exit status: 0 when quit or --count reached, 2 when the region went stale.
    mutating func run() throws -> Int32 {
        var previous: (StatsSnapshot, UInt64)?
        var reports = 0
        var staleReport: StatsReport?
        do {
            terminalInterrupted.store(false, ordering: .relaxed)
            let term = TerminalSession()
            loop: while !terminalInterrupted.load(ordering: .relaxed) {
                if let why = reader.staleReason {
                    if let fresh = reader.reopenedIfReplaced() {
                        reader = fresh
                        previous = nil
                        continue
                    }
                    staleReport = StatsReport(reader: reader, snapshot: try? reader.snapshot(), previous: nil, stale: why)
                    break
                }
                let snap = try reader.snapshot()
                let now = monotonicNanoseconds()
                let report = StatsReport(reader: reader, snapshot: snap,
                                         previous: previous.map { ($0.0, Double(now - $0.1) / 1e9) }, stale: nil)
                term.draw(frame(report))
                reports += 1
                if reports >= (count ?? .max) { break }
                previous = (snap, now)
                let due = now + UInt64(interval * 1e9)
                while case let left = Double(Int64(bitPattern: due &- monotonicNanoseconds())) / 1e9, left > 0 {
                    if terminalInterrupted.load(ordering: .relaxed) { break loop }
                    switch term.key(within: min(left, 0.2)) {
                    case UInt8(ascii: "q"), UInt8(ascii: "Q"): break loop
                    case UInt8(ascii: "o"), UInt8(ascii: "O"):
                        byRate.toggle()
                        term.draw(frame(report))
                    default: break
                    }
                }
            }
        }
        // The terminal is restored here; a stale region leaves its last table on the normal screen.
        if let staleReport {
            staleReport.table()
            return 2
        }
        return 0
    }

    /// The header, the column names, then one row per statistic in the chosen order.
    func frame(_ r: StatsReport) -> [String] {
        let state = r.stale.map { "STALE: \($0)" } ?? "live"
        var lines = [
            "\(r.id)   writer \(r.writerPid.map(String.init) ?? "?") \(state)   every \(String(format: "%.2g", interval)) s   "
                + "sorted by \(byRate ? "rate" : "name")   [o] sort by \(byRate ? "name" : "rate")  [q] quit",
            "region \(r.path)" + (r.intervalSeconds.map { String(format: "   interval %.2f s", $0) } ?? "   (rates from the second frame)"),
            "name".padding(toLength: 34, withPad: " ", startingAt: 0) + "value".leftPad(18) + "rate/s".leftPad(14),
        ]
        let rows = byRate
            ? r.stats.sorted { a, b in
                switch (a.ratePerSecond, b.ratePerSecond) {
                case let (x?, y?): return x != y ? x > y : a.name < b.name
                case (.some, nil): return true
                case (nil, .some): return false
                case (nil, nil): return a.name < b.name
                }
            }
            : r.stats.sorted { $0.name < $1.name }
        for s in rows { lines.append(r.row(s)) }
        return lines
    }
}

/// `stats --log`: CSV lines like kvm_stat's logging mode, a header then one line per interval.
struct StatsLog {
    let reader: StatsRegionReader
    let interval: Double
    let count: Int?

    /// The exit status: 0 after --count lines, 2 when the region went stale (why on stderr).
    func run() throws -> Int32 {
        // Statistics names are [a-z0-9_], so no field needs CSV quoting.
        let columns = reader.layout.statistics
        // Written straight to the fd, a line at a time, so a pipe (tee, a file) sees each line as it comes.
        TerminalSession.write((["time"] + columns.map(\.name)).joined(separator: ",") + "\n")
        var previous = (try reader.snapshot(), monotonicNanoseconds())
        var lines = 0
        while lines < (count ?? .max) {
            Thread.sleep(forTimeInterval: interval)
            if let why = reader.staleReason {
                note("stats --log: \(reader.path) is stale: \(why)")
                return 2
            }
            let snap = try reader.snapshot()
            let now = monotonicNanoseconds()
            let dt = Double(now - previous.1) / 1e9
            var fields = [String(format: "%.3f", Date().timeIntervalSince1970)]
            for d in columns {
                switch d.type {
                case .cumulative: fields.append(String(format: "%.1f", Double(snap.value(d) &- previous.0.value(d)) / dt))
                case .logHistogram, .linearHistogram:
                    let n = (0..<Int(d.size)).reduce(UInt64(0)) { $0 &+ (snap.value(d, $1) &- previous.0.value(d, $1)) }
                    fields.append(String(format: "%.1f", Double(n) / dt))
                default: fields.append(String(snap.value(d)))
                }
            }
            TerminalSession.write(fields.joined(separator: ",") + "\n")
            previous = (snap, now)
            lines += 1
        }
        return 0
    }
}
