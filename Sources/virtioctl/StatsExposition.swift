import Foundation

/// Statistics reports in the Prometheus text exposition format 0.0.4: `virtio_<name>` families with
/// `device` (the region's id) and `path` (its file) labels, per-queue values labelled `queue`,
/// counters with `_total`, time in seconds, log2 histograms as cumulative `le` buckets. Several
/// regions share one HELP and TYPE per family, as the format requires.
struct PrometheusExposition {
    private struct Family { var type: String; var help: String; var lines: [String] }
    private var families: [(name: String, family: Family)] = []
    private var index: [String: Int] = [:]
    private var comments: [String] = []

    private mutating func add(_ name: String, _ type: String, _ help: String, _ line: String) {
        if let i = index[name] { families[i].family.lines.append(line); return }
        index[name] = families.count
        families.append((name, Family(type: type, help: help, lines: [line])))
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    private static func number(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d) }

    /// `virtio_stats_region_up`: 1 for a live region, 0 for one that is stale, unreadable or absent,
    /// so that an alert can fire on a device that went away (its other series are then left out).
    mutating func addRegionUp(path: String, device: String?, up: Bool, why: String?) {
        var labels = "path=\"\(Self.escape(path))\""
        if let device { labels = "device=\"\(Self.escape(device))\"," + labels }
        add("virtio_stats_region_up", "gauge", "1 when the statistics region's writer is live, else 0", "virtio_stats_region_up{\(labels)} \(up ? 1 : 0)")
        if let why { comments.append("# \(path): \(why.replacingOccurrences(of: "\n", with: " "))") }
    }

    /// Every statistic of one report.
    mutating func add(_ report: StatsReport) {
        for s in report.stats {
            var base = s.name
            var labels = "device=\"\(Self.escape(report.id))\",path=\"\(Self.escape(report.path))\""
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
                    add(name + "_total", "counter", "\(s.name) (cumulative)", "\(name)_total{\(labels)} \(Self.number(Double(v) * scale))")
                } else {
                    add(name, "gauge", "\(s.name) (\(s.type))", "\(name){\(labels)} \(Self.number(Double(v) * scale))")
                }
            } else if let buckets = s.buckets, s.type == "log-hist" {
                let help = "\(s.name) (log2 buckets)"
                var cumulative: UInt64 = 0
                for (i, n) in buckets.enumerated() {
                    cumulative &+= n
                    let le = i == 0 ? 0 : Double(UInt64(1) << UInt64(min(i, 63))) * scale
                    if i < buckets.count - 1 { add(name, "histogram", help, "\(name)_bucket{\(labels),le=\"\(le)\"} \(cumulative)") }
                }
                add(name, "histogram", help, "\(name)_bucket{\(labels),le=\"+Inf\"} \(cumulative)")
                add(name, "histogram", help, "\(name)_count{\(labels)} \(cumulative)")
            }
        }
        if let stale = report.stale { comments.append("# region is stale: \(stale)") }
    }

    /// The exposition: each family's HELP and TYPE once, then its samples; notes as comments last.
    var text: String {
        var out = ""
        for (name, f) in families {
            out += "# HELP \(name) \(f.help)\n# TYPE \(name) \(f.type)\n"
            for l in f.lines { out += l + "\n" }
        }
        for c in comments { out += c + "\n" }
        return out
    }
}
