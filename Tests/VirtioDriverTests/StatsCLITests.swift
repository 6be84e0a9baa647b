import Foundation
import Testing

/// `virtioctl attach` with a statistics region and `virtioctl stats` reading it: JSON that decodes,
/// Prometheus text that the reference parser accepts, rates that move, a dead writer reported stale.
@Suite(.serialized, .leakChecked) struct StatsCLITests {
    @Test func blkLoadShowsMovingRatesAndValidOutputs() throws {
        let region = "/dev/shm/virtio-cli-\(getpid()).stats"
        let p = try startAttach(["soft:blk,stats_vq=on,stats_interval=100", "--load", "randread,qd=4", "--interval-ms", "50"],
                                region: region)
        defer { if p.isRunning { p.terminate() }; p.waitUntilExit() }
        usleep(300_000)
        // Two reports 0.3 s apart: the second has rates, and they are positive for reads.
        let (rc, out, err) = try virtioctl(["stats", region, "--watch", "0.3", "--count", "2", "-o", "json"])
        #expect(rc == 0, "\(err)")
        struct Report: Decodable {
            struct Stat: Decodable { let name: String; let value: UInt64?; let ratePerSecond: Double?; let count: UInt64?; let percentilesNs: [String: UInt64]? }
            let id: String; let stale: String?; let intervalSeconds: Double?; let stats: [Stat]
        }
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        // --watch prints one JSON document per report.
        let docs = out.components(separatedBy: "\n}\n").filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }.map { $0 + "\n}" }
        #expect(docs.count == 2)
        let second = try d.decode(Report.self, from: Data(docs.last!.utf8))
        #expect(second.id == "virtio-blk soft:blk" && second.stale == nil && second.intervalSeconds != nil)
        let reads = second.stats.first { $0.name == "blk_read_io" }!
        #expect((reads.ratePerSecond ?? 0) > 0 && (reads.value ?? 0) > 0, "reads move: \(reads)")
        #expect((second.stats.first { $0.name == "blk_statsq_requests" }?.value ?? 0) >= 1, "the device asked for statistics")
        let latency = second.stats.first { $0.name == "queue0_latency_ns" }!
        #expect((latency.count ?? 0) > 0 && latency.percentilesNs?["p50"] != nil)

        // Prometheus: the reference parser (prometheus_client) reads every family.
        let (prc, prom, perr) = try virtioctl(["stats", region, "-o", "prometheus"])
        #expect(prc == 0, "\(perr)")
        let py = Process()
        py.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        py.arguments = ["python3", "-c", """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            fams = list(text_string_to_metric_families(sys.stdin.read()))
            names = {f.name: f.type for f in fams}
            assert names.get("virtio_blk_read_io") == "counter", names
            assert names.get("virtio_queue_latency_seconds") == "histogram", names
            h = [s for f in fams if f.name == "virtio_queue_latency_seconds" for s in f.samples]
            assert any(s.labels.get("le") == "+Inf" and s.labels.get("queue") == "0" for s in h), h[:3]
            print(len(fams))
            """]
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        py.standardInput = inPipe
        py.standardOutput = outPipe
        py.standardError = errPipe
        try py.run()
        inPipe.fileHandleForWriting.write(Data(prom.utf8))
        try inPipe.fileHandleForWriting.close()
        py.waitUntilExit()
        let pyErr = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(py.terminationStatus == 0, "prometheus_client refused the exposition: \(pyErr)\n\(prom.prefix(2000))")
        #expect(Int(String(decoding: outPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 15)
        // Text-format rules checked here too: one HELP and TYPE per family, before its samples.
        var seen = Set<String>()
        for line in prom.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let name = String(line.split(separator: " ")[2])
            #expect(!seen.contains(name), "family \(name) declared twice")
            seen.insert(name)
        }

        // SIGTERM: the device is reset and the region removed.
        p.terminate()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: region))
    }

    @Test func aRegionFromADeadProcessIsStale() throws {
        let region = "/dev/shm/virtio-cli-dead-\(getpid()).stats"
        defer { unlink(region) }
        let p = try startAttach(["soft:balloon,stats_interval=50"], region: region)
        usleep(200_000)
        kill(p.processIdentifier, SIGKILL)  // no clean-up: the file stays behind
        p.waitUntilExit()
        let (rc, out, _) = try virtioctl(["stats", region])
        #expect(rc == 2)
        #expect(out.contains("STALE") && out.contains("is gone"), "\(out)")
        let (jrc, json, _) = try virtioctl(["stats", region, "-o", "json"])
        #expect(jrc == 2 && json.contains("\"stale\""))
        let (mrc, _, merr) = try virtioctl(["stats", "/dev/shm/does-not-exist.stats"])
        #expect(mrc == 1 && merr.contains("cannot open"))
    }
}
