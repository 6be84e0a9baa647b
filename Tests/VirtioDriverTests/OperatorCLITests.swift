import Foundation
import Testing

/// Runs any program and returns (exit status, stdout, stderr).
func runTool(_ args: [String], input: String? = nil) throws -> (Int32, String, String) {
    try runCaptured(URL(fileURLWithPath: "/usr/bin/env"), args, input: input)
}

/// For operators: the `/metrics` endpoint scraped by a real Prometheus, its bad addresses.
@Suite(.serialized, .leakChecked) struct OperatorCLITests {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "virtioctl-op-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func exe() -> String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl").path
    }

    func start(_ args: [String], stderrFile: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: args[0] == "virtioctl" ? exe() : "/usr/bin/env")
        p.arguments = args[0] == "virtioctl" ? Array(args.dropFirst()) : args
        p.standardOutput = FileHandle.nullDevice
        if let stderrFile {
            _ = FileManager.default.createFile(atPath: stderrFile, contents: nil)
            p.standardError = FileHandle(forWritingAtPath: stderrFile)
        } else {
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        return p
    }

    /// Waits (deadline `seconds`) until `probe` returns a value.
    func waitFor<V>(_ seconds: Double, _ what: String, _ probe: () throws -> V?) throws -> V {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if let v = try probe() { return v }
            usleep(100_000)
        }
        throw CLIMissing(path: "timed out after \(seconds) s waiting for \(what)")
    }

    /// `virtioctl attach` with a load, its region in `region`.
    func attach(_ region: String, _ spec: String = "soft:blk,stats_vq=on,stats_interval=100") throws -> Process {
        try startAttach([spec, "--load", "randread,qd=4", "--interval-ms", "100"], region: region)
    }

    func get(_ url: String) throws -> String? {
        let (rc, out, _) = try runTool(["curl", "-sf", "--max-time", "5", url])
        return rc == 0 ? out : nil
    }

    /// A TCP socket bound to a port of 127.0.0.1 the kernel chose, and that port.
    func boundSocket() -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, UInt16(bigEndian: a.sin_port))
    }

    /// A TCP port nothing listens on now (bound, read back, closed).
    func freePort() -> UInt16 {
        let (fd, port) = boundSocket()
        close(fd)
        return port
    }

    @Test func prometheusScrapesTheEndpointAndSeesTheLoadMove() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try attach(dir + "/a.stats")
        defer { endByPID(first) }
        let exporter = try start(["virtioctl", "stats", "--listen", "127.0.0.1:0", dir + "/*.stats"], stderrFile: dir + "/exporter.err")
        defer { endByPID(exporter) }
        let url = try waitFor(20, "the exporter to listen") { () -> String? in
            let err = (try? String(contentsOfFile: dir + "/exporter.err", encoding: .utf8)) ?? ""
            return err.split(separator: "\n").first { $0.hasPrefix("listening on http://127.0.0.1:") }.map { String($0.dropFirst("listening on ".count)) }
        }
        let body = try #require(try get(url))
        #expect(body.contains("virtio_stats_region_up{device=\"virtio-blk soft:blk\",path=\"\(dir)/a.stats\"} 1"), "\(body.prefix(600))")
        // promtool's own checks (format and lint) on what the endpoint served.
        let (prc, pout, perr) = try runTool(["promtool", "check", "metrics"], input: body)
        #expect(prc == 0, "promtool check metrics: \(pout) \(perr)")
        #expect(try get(url.replacingOccurrences(of: "/metrics", with: "/nothing")) == nil, "other paths are 404")

        // A region that appears later is exported on the next scrape; one whose writer died is marked down.
        let second = try attach(dir + "/b.stats", "soft:blk,stats_interval=100")
        _ = try waitFor(10, "b.stats to be exported") { try get(url)?.contains("path=\"\(dir)/b.stats\"} 1") == true ? true : nil }
        kill(second.processIdentifier, SIGKILL)
        second.waitUntilExit()
        let down = try waitFor(10, "b.stats to be marked down") { try get(url).flatMap { $0.contains("path=\"\(dir)/b.stats\"} 0") ? $0 : nil } }
        #expect(!down.contains("virtio_blk_read_io_total{device=\"virtio-blk soft:blk\",path=\"\(dir)/b.stats\""), "a stale region's series are left out")

        // A real Prometheus server scrapes it every second; its query API sees the read counter move.
        let port = url.split(separator: ":").last!.split(separator: "/").first!
        let webPort = freePort()
        try """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: virtio
                static_configs: [{targets: ["127.0.0.1:\(port)"]}]
            """.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        let prometheus = try start(["prometheus", "--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                                    "--web.listen-address=127.0.0.1:\(webPort)", "--log.level=warn"], stderrFile: dir + "/prometheus.err")
        defer { endByPID(prometheus) }
        struct Answer: Decodable {
            struct Data: Decodable { struct Series: Decodable { let metric: [String: String]; let value: [StringOrNumber] }; let result: [Series] }
            let status: String
            let data: Data
        }
        func readCount() throws -> Double? {
            let q = "virtio_blk_read_io_total%7Bpath%3D%22\(dir.replacingOccurrences(of: "/", with: "%2F"))%2Fa.stats%22%7D"
            guard let text = try get("http://127.0.0.1:\(webPort)/api/v1/query?query=\(q)"),
                  let a = try? JSONDecoder().decode(Answer.self, from: Data(text.utf8)), a.status == "success",
                  let s = a.data.result.first, s.metric["device"] == "virtio-blk soft:blk", case .string(let v)? = s.value.last
            else { return nil }
            return Double(v)
        }
        let before = try waitFor(60, "Prometheus to have scraped virtio_blk_read_io_total") { try readCount() }
        let after = try waitFor(30, "the scraped counter to move") { try readCount().flatMap { $0 > before ? $0 : nil } }
        #expect(after > before)
        #expect(prometheus.isRunning, "prometheus: \((try? String(contentsOfFile: dir + "/prometheus.err", encoding: .utf8)) ?? "")")
        // SIGTERM ends the exporter even though Foundation's Process started it with SIGTERM blocked.
        kill(exporter.processIdentifier, SIGTERM)
        _ = try waitFor(10, "the exporter to end on SIGTERM") { exporter.isRunning ? nil : true }
    }

    /// A value in Prometheus's `[time, "value"]` pair.
    enum StringOrNumber: Decodable {
        case string(String), number(Double)
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .string(s) } else { self = .number(try c.decode(Double.self)) }
        }
    }

    @Test func badListenAddressesAreRefusedClearly() throws {
        let (rc1, _, err1) = try virtioctl(["stats", "--listen", "127.0.0.1:99999", "x"])
        #expect(rc1 != 0 && err1.contains("the port must be 0...65535"), "\(err1)")
        let (rc2, _, err2) = try virtioctl(["stats", "--listen", "example.org:80", "x"])
        #expect(rc2 != 0 && err2.contains("not an IPv4 or IPv6 address"), "\(err2)")
        // A port in use: another listener holds it.
        let (fd, port) = boundSocket()
        defer { close(fd) }
        listen(fd, 1)
        let (rc3, _, err3) = try virtioctl(["stats", "--listen", "127.0.0.1:\(port)", "x"])
        #expect(rc3 != 0 && err3.contains("the port is in use"), "\(err3)")
        let (rc4, _, err4) = try virtioctl(["stats", "a", "b"])
        #expect(rc4 != 0 && err4.contains("only with --listen"), "\(err4)")
        try? FileManager.default.removeItem(atPath: dir)
    }
}
