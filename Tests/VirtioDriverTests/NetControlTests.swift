import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

/// The control queue, link state and the hostile modes of soft:net, seen by the net driver.
@Suite(.leakChecked) struct NetControlTests {
    /// Promiscuous off: the device filters by MAC (as QEMU does); the MAC table and all-multicast
    /// let frames back in; every command is acknowledged OK.
    @Test func receiveFilterFollowsTheControlCommands() throws {
        let (f, net) = try attachNet()
        let other = MACAddress([0x02, 0xAA, 0, 0, 0, 1]), group = MACAddress([0x01, 0x00, 0x5E, 0, 0, 1])
        func arrives(_ to: MACAddress) throws -> Bool {
            let frame = testFrame(length: 64, seed: 9, to: to)
            _ = frame.withUnsafeBytes { f.receive(pair: 0, frame: $0) }
            return try net.receiveFrames(1, rounds: 3).count == 1
        }
        #expect(try arrives(other), "promiscuous is the state at reset")
        try net.setPromiscuous(false)
        #expect(try !arrives(other))
        #expect(try arrives(net.mac))
        #expect(try arrives(.broadcast))
        #expect(try !arrives(group))
        try net.setAllMulticast(true)
        #expect(try arrives(group))
        try net.setAllMulticast(false)
        try net.setMACTable(unicast: [other], multicast: [])
        #expect(try arrives(other) && !(try arrives(group)))
        #expect(net.controlCounters.sent == 4 && net.controlCounters.refused == 0)
        #expect(f.personality.counters.rxFiltered == 3)
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
    }

    /// MAC_ADDR_SET changes the config (and its generation): pollLink sees no silent change.
    @Test func setMACChangesTheConfigMAC() throws {
        let (f, net) = try attachNet()
        let m = MACAddress([0x02, 0x11, 0x22, 0x33, 0x44, 0x55])
        try net.setMAC(m)
        #expect(net.mac == m && net.config.mac == m)
        #expect(try net.pollLink() == nil)
        #expect(throws: NetError.invalidRequest("01:00:5e:00:00:01 is not a unicast address")) {
            try net.setMAC(MACAddress([0x01, 0x00, 0x5E, 0, 0, 1]))
        }
        let frame = testFrame(length: 64, seed: 1, to: m)
        try net.setPromiscuous(false)
        _ = frame.withUnsafeBytes { f.receive(pair: 0, frame: $0) }
        #expect(try net.receiveFrames(1) == [frame])
    }

    /// A device without a MAC (or with MAC off) gets a random locally administered one (C2, H13).
    @Test func randomMACIsLocallyAdministeredUnicast() throws {
        var o = NetAttachOptions()
        o.policy.forcedOff.insert(NetFeature.mac)
        let (_, net) = try attachNet(options: o)
        #expect(!net.has(NetFeature.mac))
        #expect(net.mac.array[0] & 0x02 == 0x02 && !net.mac.isMulticast && !net.mac.isZero)
    }

    /// Link down then up through STATUS (C3), the announce request acknowledged (A1).
    @Test(arguments: [false, true])
    func linkChangesAndAnnounceAreSeen(interrupts: Bool) throws {
        var o = NetAttachOptions()
        o.interrupts = interrupts
        let (f, net) = try attachNet(options: o)
        #expect(net.linkUp && net.has(NetFeature.status) && net.has(NetFeature.guestAnnounce))
        #expect(try net.pollLink() == nil)
        f.setLink(up: false)
        #expect(try net.pollLink() == NetLinkEvent(linkUp: false, linkChanged: true, announced: false))
        #expect(!net.linkUp)
        // Frames sent with the link down are consumed and dropped by the device.
        #expect(try net.send([testFrame(length: 60, seed: 1, to: net.mac)]) == 1)
        #expect(try net.receiveFrames(1, rounds: 5).isEmpty)
        f.setLink(up: true)
        #expect(try net.pollLink()?.linkUp == true)
        f.requestAnnounce()
        #expect(try net.pollLink() == NetLinkEvent(linkUp: true, linkChanged: false, announced: true))
        #expect(!f.personality.announcePending)
        #expect(try net.pollLink() == nil)
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
    }

    /// The receive-side hostile modes: each a named violation, the queue broken after, no frame
    /// handed out twice, no crash.
    @Test(arguments: [("rx_short_len", "shortFrame"), ("rx_num_buffers_zero", "numBuffersOutOfRange"),
                      ("rx_num_buffers_excess", "numBuffersOutOfRange")])
    func hostileReceiveIsANamedViolation(fault: String, expected: String) throws {
        let (_, net) = try attachNet("fault=\(fault),fault_after=3")
        let frames = (0..<10).map { testFrame(length: 80, seed: $0, to: net.mac) }
        _ = try net.send(frames)
        var burst = net.rx(0).pointee.makeBurst(capacity: 32)
        var good = 0
        var caught: NetViolation?
        do {
            // The frames before the bad one come out; the violation is thrown on the next call.
            for _ in 0..<20 { good += try net.rx(0).pointee.receive(into: &burst) }
        } catch { if case let .violation(v)? = error as? NetError { caught = v } }
        #expect(caught.flatMap { Mirror(reflecting: $0).children.first?.label } == expected, "got \(String(describing: caught))")
        #expect(good == 3, "frames before the fault: \(good)")
        #expect(caught?.rule.isEmpty == false)
        // Broken for good: the next receive throws the same violation, hands out nothing.
        #expect(throws: NetError.violation(caught!)) { _ = try net.rx(0).pointee.receive(into: &burst) }
        #expect(burst.count == 0)
    }

    /// A control ack that is neither OK nor ERR.
    @Test func badControlAckIsAViolation() throws {
        let f = try softNet("fault=ctrl_bad_ack")
        let net = try NetDevice(transport: try PCITransport(function: f))
        #expect(throws: NetError.violation(.controlAck(7))) { try net.setPromiscuous(false) }
    }

    /// The MAC or the pair count changing with config_generation left alone.
    @Test(arguments: [("mac_silent", "mac"), ("pairs_silent", "max_virtqueue_pairs")])
    func silentConfigChangeIsAViolation(fault: String, field: String) throws {
        let (_, net) = try attachNet("queues=2,fault=\(fault),fault_after=1")
        #expect(try net.pollLink() == nil)
        _ = try net.send([testFrame(length: 60, seed: 1, to: net.mac), testFrame(length: 60, seed: 2, to: net.mac)])
        var caught: NetViolation?
        do { _ = try net.pollLink() } catch { if case let .violation(v)? = error as? NetError { caught = v } }
        guard case let .configChangedSilently(f, _, _)? = caught else {
            Issue.record("no violation: \(String(describing: caught))")
            return
        }
        #expect(f == field)
        #expect(throws: NetError.violation(caught!)) { _ = try net.pollLink() }
    }

    /// A ring-level lie on the receive queue (len_overflow: a used length past the buffer).
    @Test func usedLengthPastTheBufferBreaksTheQueue() throws {
        let (_, net) = try attachNet("fault=len_overflow,fault_after=2")
        var burst = net.rx(0).pointee.makeBurst(capacity: 32)
        var caught: NetError?
        do {
            for i in 0..<10 {
                _ = try net.send([testFrame(length: 80, seed: i, to: net.mac)])
                try net.tx(0).pointee.reclaim()
                _ = try net.rx(0).pointee.receive(into: &burst)
            }
        } catch { caught = error as? NetError }
        guard case .virtio(.ring)? = caught else { Issue.record("len_overflow went unnoticed: \(String(describing: caught))"); return }
    }
}
