import Foundation
import Synchronization
import VirtioCore

/// The regions `stats --listen` exports: paths and glob patterns resolved again on every scrape,
/// so that a device attached later is picked up, one replaced is reopened and one gone is marked.
final class ExportedRegions: Sendable {
    let patterns: [String]
    /// Readers by path, kept between scrapes (each maps its file once).
    private let readers = Mutex<[String: StatsRegionReader]>([:])

    init(patterns: [String]) { self.patterns = patterns }

    static func isPattern(_ s: String) -> Bool { s.contains(where: { "*?[".contains($0) }) }

    /// Every path a pattern names now, sorted; a literal path names itself even when absent.
    func paths() -> [String] {
        var out: [String] = []
        for p in patterns {
            guard Self.isPattern(p) else { out.append(p); continue }
            var g = glob_t()
            defer { globfree(&g) }
            guard glob(p, 0, nil, &g) == 0 else { continue }
            for i in 0..<Int(g.gl_pathc) { if let c = g.gl_pathv[i] { out.append(String(cString: c)) } }
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }
    }

    /// One scrape: every live region's statistics, and `virtio_stats_region_up` for each path.
    func exposition() -> String {
        var e = PrometheusExposition()
        let now = paths()
        readers.withLock { cache in
            for path in cache.keys where !now.contains(path) { cache[path] = nil }
            for path in now {
                if let r = cache[path], r.staleness?.fileChanged == true {
                    cache[path] = nil
                }
                if cache[path] == nil {
                    do { cache[path] = try StatsRegionReader(path: path) } catch {
                        e.addRegionUp(path: path, device: nil, up: false, why: "\(error)")
                        continue
                    }
                }
                let reader = cache[path]!
                if let why = reader.staleReason {
                    e.addRegionUp(path: path, device: reader.layout.id, up: false, why: why)
                    continue
                }
                guard let snap = try? reader.snapshot() else {
                    e.addRegionUp(path: path, device: reader.layout.id, up: false, why: "no consistent snapshot")
                    continue
                }
                e.addRegionUp(path: path, device: reader.layout.id, up: true, why: nil)
                e.add(StatsReport(reader: reader, snapshot: snap, previous: nil, stale: nil))
            }
        }
        return e.text
    }
}

/// `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (host 127.0.0.1), as Prometheus exporters take them.
func parseListenAddress(_ s: String) throws -> (host: String, port: UInt16) {
    var host = "127.0.0.1"
    var portText = s
    if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
        host = String(s[s.index(after: s.startIndex)..<close])
        let rest = s[s.index(after: close)...]
        guard rest.hasPrefix(":") else { throw CLIError("--listen \(s): expected [ADDRESS]:PORT") }
        portText = String(rest.dropFirst())
    } else if let colon = s.lastIndex(of: ":") {
        if colon != s.startIndex { host = String(s[..<colon]) }
        portText = String(s[s.index(after: colon)...])
        guard !host.contains(":") else { throw CLIError("--listen \(s): put an IPv6 address in brackets, [::1]:PORT") }
    }
    guard let port = UInt16(portText) else { throw CLIError("--listen \(s): the port must be 0...65535 (0 picks a free one)") }
    return (host, port)
}
