import Testing
import VirtioCheck
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

/// `virtioctl check` on virtio-net: clean on a conforming soft:net, and every hostile mode soft:net
/// has named by the rule it breaks.
@Suite(.leakChecked) struct NetCheckTests {
    func check(_ spec: String, timeoutMs: Int = 2_000, peer: UInt32? = nil) throws -> CheckReport {
        let f = try softNet(spec)
        var o = CheckOptions()
        o.timeoutMilliseconds = timeoutMs
        o.net.peer = peer
        let report = DeviceChecker(transport: try PCITransport(function: f), options: o).run()
        #expect(f.status == 0, "\(spec): the device is left reset")
        return report
    }

    @Test(arguments: ["", "packed=off", "queues=3", "mrg_rxbuf=off,in_order=off", "ctrl_vq=off", "mtu=9000,speed=10000"])
    func aCleanNetDeviceChecksClean(spec: String) throws {
        let r = try check(spec)
        #expect(r.clean, "\(spec): \(r.findings)")
        let names = r.steps.map(\.name)
        #expect(names.contains("net attach") && names.contains("net frames split"), "\(names)")
        #expect(names.contains("net frames packed") == !spec.contains("packed=off"), "\(names)")
        #expect(names.contains("net frames split, one buffer per frame") == !spec.contains("mrg_rxbuf=off"), "\(names)")
        // The loop backend hands every frame back: all 16 of ours come back on each layout.
        for s in r.steps where s.name.hasPrefix("net frames") {
            #expect(s.outcome == .pass && s.detail.contains("received 16 of ours back"), "\(s.name): \(s.detail)")
        }
        let control = try #require(r.steps.first { $0.name == "net control" })
        if spec.contains("ctrl_vq=off") { #expect(control.outcome == .skip) } else {
            #expect(control.detail.contains("RX_PROMISC 0") && control.detail.contains("MAC_ADDR_SET"), "\(control.detail)")
        }
        if spec == "queues=3" { #expect(r.steps[3].detail.contains("all 3 pairs enabled"), "\(r.steps[3].detail)") }
    }

    @Test(arguments: [
        ("fault=rx_short_len", "at least the 12-byte header"),
        ("fault=rx_num_buffers_zero", "num_buffers is 1 or more"),
        ("fault=rx_num_buffers_excess", "num_buffers is 1 or more"),
        ("fault=rx_bad_gso", "gso_type is NONE"),
        ("fault=ctrl_bad_ack", "ack VIRTIO_NET_OK (0) or VIRTIO_NET_ERR (1)"),
        ("fault=mac_silent", "moves config_generation"),
        ("fault=used_id_range", "id < queue size"),
        ("fault=dup_id", "not yet got back"),
        ("fault=len_overflow", "device-writable part only"),
        ("fault=idx_jump", "Wrap Counters"),
        ("packed=off,fault=idx_jump", "used idx may only advance"),
        ("fault=flags_lie", "AVAIL and USED"),
        ("queues=2,fault=pairs_silent", "moves config_generation"),
        ("fault=rx_unknown_flags", "without GUEST_CSUM flags is 0"),
    ])
    func eachNetFaultIsNamed(spec: String, clause: String) throws {
        let r = try check(spec + ",fault_after=4", timeoutMs: 300)
        #expect(!r.clean)
        #expect(r.findings.contains { $0.clause.contains(clause) }, "\(spec): \(r.findings.map(\.clause))")
    }

    /// With a peer named, silence is a failure: the null backend swallows every frame.
    @Test func aPeerThatNeverAnswersIsAFailure() throws {
        let r = try check("backend=null", timeoutMs: 200, peer: NetPackets.parseIPv4("169.254.9.9"))
        #expect(r.findings.contains { $0.clause.contains("reaches the link") && $0.message.contains("169.254.9.9") }, "\(r.findings)")
        let clean = try check("backend=null", timeoutMs: 200)
        #expect(clean.clean, "\(clean.findings)")
    }
}
