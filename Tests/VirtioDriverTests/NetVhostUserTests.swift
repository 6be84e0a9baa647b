import Foundation
import Testing

/// The net driver over the vhost-user frontend (emulated config and control queue) against soft:net
/// served by `virtioctl softdev serve --vhost-user`, including the two ends of backend=pair.
@Suite(.serialized) struct NetVhostUserTests {
    /// Starts `virtioctl softdev serve` with these arguments; waits for every socket to exist.
    func serve(_ args: [String], sockets: [String]) throws -> (Process, Pipe) {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl")
        let p = Process()
        p.executableURL = exe
        p.arguments = ["softdev", "serve"] + args
        let err = Pipe()
        p.standardError = err
        try p.run()
        var waited = 0
        while !sockets.allSatisfy({ FileManager.default.fileExists(atPath: $0) }), waited < 200 { usleep(50_000); waited += 1 }
        return (p, err)
    }

    func json(_ out: String) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [String: Any] ?? [:] }
    func packets(_ j: [String: Any], _ side: String) -> Int { (j[side] as? [String: Any])?["packets"] as? Int ?? -1 }

    @Test func twoPairsAndTheControlQueueOverVhostUser() throws {
        let sock = "/tmp/net-vhu-\(getpid()).sock"
        let (p, err) = try serve(["--vhost-user", sock, "--clients", "3", "soft:net,backend=loop,queues=2"], sockets: [sock])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit(); unlink(sock) }
        let (s0, info, e0) = try virtioctl(["net", "info", "vhost-user:\(sock),type=net,queues=2,mac=02:00:00:00:00:07", "--queues", "2", "-o", "json"])
        #expect(s0 == 0, "\(e0)")
        let i = json(info)
        #expect(i["mac"] as? String == "02:00:00:00:00:07" && i["queue_pairs"] as? Int == 2 && i["control_queue"] as? Bool == true, "\(info)")
        // io on 2 pairs: VQ_PAIRS_SET went through the emulated control queue and enabled pair 1's
        // rings at the backend (a frame on a ring it had not enabled would be a violation below);
        // frames loop without a drop (a device that held completions for a whole ring stalled here).
        let (s1, out, e1) = try virtioctl(["net", "fwd", "vhost-user:\(sock),type=net,queues=2", "--queues", "2", "--mode", "io",
                                           "--tx-first", "--frames", "20000", "--duration", "30", "--quiet", "-o", "json"])
        #expect(s1 == 0, "\(e1)")
        let j = json(out)
        #expect(packets(j, "rx") >= 20000 && (j["tx"] as? [String: Any])?["drops"] as? Int == 0, "\(out)")
        let (s2, ctrl, e2) = try virtioctl(["net", "ctrl", "vhost-user:\(sock),type=net", "--promisc", "off", "--mac", "02:00:00:00:00:09"])
        #expect(s2 == 0, "\(ctrl) \(e2)")
        p.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0 && !log.contains("driver violation"), "\(log)")
    }

    @Test func theTwoEndsOfAPairCarryFramesBetweenTwoDrivers() throws {
        let a = "/tmp/net-pair-a-\(getpid()).sock", b = "/tmp/net-pair-b-\(getpid()).sock"
        let (p, err) = try serve(["--vhost-user", a, "--vhost-user", b, "--clients", "1", "soft:net,backend=pair"], sockets: [a, b])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit(); unlink(a); unlink(b) }
        let rx = Process()
        rx.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl")
        rx.arguments = ["net", "fwd", "vhost-user:\(b),type=net", "--mode", "rxonly", "--frames", "2000", "--duration", "20", "--quiet", "-o", "json"]
        let rxOut = Pipe()
        rx.standardOutput = rxOut
        rx.standardError = FileHandle.nullDevice
        try rx.run()
        usleep(500_000)
        let (s, out, e) = try virtioctl(["net", "fwd", "vhost-user:\(a),type=net", "--mode", "txonly", "--duration", "3", "--quiet", "-o", "json"])
        #expect(s == 0, "\(e)")
        #expect(packets(json(out), "tx") > 0)
        rx.waitUntilExit()
        let got = json(String(decoding: rxOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        #expect(rx.terminationStatus == 0 && packets(got, "rx") >= 2000, "\(got)")
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(!log.contains("driver violation"), "\(log)")
    }

    @Test func aFrozenBackendEndsTheRunWithinItsBounds() throws {
        let sock = "/tmp/net-frozen-\(getpid()).sock"
        let (p, _) = try serve(["--vhost-user", sock, "soft:net,backend=null"], sockets: [sock])
        defer { kill(p.processIdentifier, SIGCONT); if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit(); unlink(sock) }
        // The backend stops serving (SIGSTOP) mid-run with frames in flight: the end-of-run wait for
        // them (0.5 s) and the stop's GET_VRING_BASE (timeout=1000) bound the run: it ends (without them it would wait forever) and still reports.
        let freeze = Thread { usleep(700_000); kill(p.processIdentifier, SIGSTOP) }
        freeze.start()
        let (s, out, e) = try virtioctl(["net", "fwd", "vhost-user:\(sock),type=net,timeout=1000", "--mode", "txonly",
                                         "--duration", "1.5", "--quiet", "-o", "json"])
        #expect(s == 0 && packets(json(out), "tx") > 0, "\(s) \(out) \(e)")
    }
}
