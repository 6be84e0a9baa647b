import Foundation
import Testing

/// `virtioctl net info|fwd|ctrl` as a testpmd user would run them, and their bad input.
@Suite struct NetCLITests {
    @Test func infoShowsTheNetDevice() throws {
        let (s, out, err) = try virtioctl(["net", "info", "soft:net,queues=2,mtu=4000,mac=02:11:22:33:44:55", "--queues", "2", "-o", "json"])
        #expect(s == 0, "\(err)")
        let j = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        #expect(j["mac"] as? String == "02:11:22:33:44:55" && j["mtu"] as? Int == 4000 && j["link"] as? String == "up")
        #expect(j["queue_pairs"] as? Int == 2 && j["max_queue_pairs"] as? Int == 2 && j["control_queue"] as? Bool == true)
        let (s2, text, _) = try virtioctl(["net", "info", "soft:net,link=down"])
        #expect(s2 == 0 && text.contains("link              down") && text.contains("VIRTIO_NET_F_MRG_RXBUF"))
    }

    @Test func fwdPrintsRatesAndAJSONSummary() throws {
        let (s, out, err) = try virtioctl(["net", "fwd", "soft:net", "--mode", "io", "--tx-first", "--frames", "20000", "-o", "json", "--duration", "20"])
        #expect(s == 0, "\(err)")
        let j = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        let rx = j["rx"] as! [String: Any], tx = j["tx"] as! [String: Any]
        #expect((rx["packets"] as! Int) >= 20000 && (tx["packets"] as! Int) >= 20000)
        #expect(err.contains("io on 1 pair(s)"))
        let (s2, _, err2) = try virtioctl(["net", "fwd", "soft:net,backend=null", "--mode", "txonly", "--duration", "1.5", "--size", "128"])
        #expect(s2 == 0)
        #expect(err2.contains("tx-pps") && err2.contains("tx-bps"), "\(err2)")
    }

    @Test func fwdCapturesToAPcapTcpdumpReads() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fwd-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (s, _, err) = try virtioctl(["net", "fwd", "soft:net,backend=null,null_rate=max,null_size=100", "--mode", "rxonly",
                                         "--frames", "50", "--pcap", path, "--quiet"])
        #expect(s == 0, "\(err)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tcpdump")
        p.arguments = ["-nn", "-e", "-r", path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let lines = text.split(separator: "\n")
        #expect(lines.count >= 50, "\(text)")
        #expect(lines.allSatisfy { $0.contains("169.254.0.1.9 > 169.254.0.2.9: UDP, length 58") && $0.contains("length 100") }, "\(text)")
    }

    @Test func ctrlShowsEachAck() throws {
        let (s, out, err) = try virtioctl(["net", "ctrl", "soft:net,queues=4", "--promisc", "off", "--allmulti", "on",
                                           "--mac", "02:00:00:00:00:09", "--pairs", "3"])
        #expect(s == 0, "\(err)")
        for k in ["allmulti: ok", "mac: ok", "mac_now: 02:00:00:00:00:09", "pairs: ok", "promisc: ok"] { #expect(out.contains(k), "\(out)") }
        let (s2, _, e2) = try virtioctl(["net", "ctrl", "soft:net,ctrl_vq=off", "--promisc", "on"])
        #expect(s2 != 0 && e2.contains("VIRTIO_NET_F_CTRL_RX"), "\(e2)")
    }

    @Test func checkRunsTheNetSteps() throws {
        let (s, out, err) = try virtioctl(["check", "soft:net,queues=2"])
        #expect(s == 0, "\(out)\(err)")
        #expect(out.contains("net frames packed") && out.contains("received 16 of ours back") && out.contains("no violations found"), "\(out)")
        let (s2, out2, _) = try virtioctl(["check", "soft:net,fault=ctrl_bad_ack", "--timeout", "300"])
        #expect(s2 == 1 && out2.contains("VIRTIO_NET_ERR (1)"), "\(out2)")
    }

    @Test func badInputGetsAClearMessage() throws {
        for (args, message) in [
            (["net", "fwd", "soft:net", "--ip", "192.168.1.1"], "link-local"),
            (["net", "fwd", "soft:net", "--tx-ip", "10.0.0.1,10.0.0.2"], "link-local"),
            (["net", "fwd", "soft:net", "--size", "20"], "42...9014"),
            (["net", "fwd", "soft:net", "--mode", "flood"], "flood"),
            (["net", "fwd", "soft:net", "--size", "2000", "--mode", "txonly"], "MTU + 14 = 1514"),
            (["net", "fwd", "soft:net", "--pcap-sent"], "--pcap-sent needs --pcap"),
            (["net", "fwd", "soft:net", "--pcap", "/nonexistent/dir/x.pcap", "--frames", "1"], "capture file /nonexistent/dir/x.pcap"),
            (["net", "info", "soft:blk"], "`virtioctl net` drives network devices"),
            (["net", "info", "soft:net,backend=pair"], "two ends"),
            (["net", "info", "soft:net,fault=bogus"], "no such mode"),
            (["net", "ctrl", "soft:net"], "nothing to send"),
            (["net", "info", "soft:net", "--queues", "3"], "queue pair"),
            (["info", "soft:net"], "virtioctl net"),
            (["check", "soft:net", "--net-peer", "10.0.0.1"], "--net-peer 10.0.0.1: expected a link-local"),
            (["check", "soft:net", "--net-ip", "8.8.8.8"], "--net-ip 8.8.8.8: expected a link-local"),
        ] {
            let (s, out, err) = try virtioctl(args)
            #expect(s != 0, "\(args) exited 0")
            #expect(err.contains(message), "\(args): \(err)")
            #expect(out.isEmpty || args.contains("--frames"), "\(args): \(out)")
        }
    }
}
