import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

/// The driver MUST/SHOULD clauses of virtio-net (digest §7), one test each, named by clause.
/// soft:net checks the driver side of each on the wire (its conformance log); the feature
/// clauses are checked against a device that offers every bit there is.
@Suite(.leakChecked) struct NetClauseTests {
    /// What the driver accepts from a device offering all 64 bits (MTU 1500).
    static func acceptedFromEverything(checksum: Bool = false, without: [Int] = []) throws -> FeatureSet {
        var bits = netDriverFeatures
        if checksum { bits = bits.union([NetFeature.csum, NetFeature.guestCsum]) }
        var all = FeatureSet(rawValue: ~0)
        for b in without { all.remove(b) }
        let chosen = try FeaturePolicy().negotiate(offered: all, deviceTypeBits: bits, deviceType: .net)
        return netFeatureDependencies(chosen, mtu: 1500)
    }

    /// Traffic on every path (frames both ways, control commands, link poll) with no violation logged.
    static func cleanRun(_ spec: String, pairs: Int = 1) throws -> SoftPCIFunction<SoftNet> {
        var o = NetAttachOptions()
        o.queuePairs = pairs
        let (f, net) = try attachNet(spec, options: o)
        for p in 0..<pairs {
            let frames = (0..<40).map { testFrame(length: 60 + $0 * 30, seed: $0, to: net.mac) }
            #expect(try net.send(frames, pair: p) == 40)
            #expect(try net.receiveFrames(40, pair: p) == frames)
        }
        try net.setPromiscuous(false)
        try net.setAllMulticast(true)
        _ = try net.pollLink()
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        return f
    }

    @Test func G1_noUnofferedFeatureNorOneWithoutItsPrerequisite() throws {
        let (f, net) = try attachNet("ctrl_vq=off")
        #expect(net.negotiated.isSubset(of: f.offeredFeatures))
        let f2 = try Self.acceptedFromEverything(without: [NetFeature.ctrlVQ])
        for b in [NetFeature.ctrlRX, NetFeature.ctrlMACAddr, NetFeature.mq, NetFeature.guestAnnounce, NetFeature.ctrlVLAN] {
            #expect(!f2.contains(b), "bit \(b) accepted without CTRL_VQ")
        }
    }

    @Test func G2_nothingPastTheUsedLengthIsHandedOut() throws {
        let (_, net) = try attachNet()
        _ = try net.send([testFrame(length: 100, seed: 1, to: net.mac)])
        var burst = net.rx(0).pointee.makeBurst(capacity: 4)
        #expect(try net.rx(0).pointee.receive(into: &burst) == 1)
        #expect(burst[0].length == 100 && burst[0].first.count == 100, "a 2048-byte buffer, 112 bytes used")
    }

    @Test func C1_neverWritesTheDeviceConfig() throws {
        _ = try Self.cleanRun("mtu=1500,speed=1000")
        // And the check can fail: a write is logged.
        let (f, net) = try attachNet()
        try f.barWrite(4, offset: 0x2000, width: 1, value: 0)  // BAR 4 + 0x2000: the device config
        #expect(net.linkUp)  // the driver (and its DRIVER_OK) lives past the write
        #expect(f.log.violations.contains { "\($0)".contains("MUST NOT write to any of the device configuration fields") }, "\(f.log.violations)")
    }

    @Test func C2_usesTheDeviceMACOrALocallyAdministeredOne() throws {
        let (_, net) = try attachNet("mac=52:54:00:aa:bb:cc")
        #expect(net.has(NetFeature.mac) && net.mac == MACAddress([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]))
        var o = NetAttachOptions()
        o.policy.forcedOff.insert(NetFeature.mac)
        let (_, other) = try attachNet(options: o)
        #expect(other.mac.array[0] & 0x03 == 0x02)
    }

    @Test func C3_linkFromStatusOrAssumedUp() throws {
        let (_, noStatus) = try attachNet("status=off")
        #expect(!noStatus.has(NetFeature.status) && noStatus.linkUp)
        let (_, down) = try attachNet("link=down")
        #expect(down.has(NetFeature.status) && !down.linkUp)
    }

    @Test func C4_negotiatesMTUWhenOffered() throws {
        let (_, net) = try attachNet("mtu=4000")
        #expect(net.has(NetFeature.mtu) && net.config.mtu == 4000 && net.maxFrame == 4014)
    }

    @Test func C5_receiveBuffersHoldOneMTUFrame() throws {
        let (_, net) = try attachNet("mtu=9000,mrg_rxbuf=off")
        #expect(net.receiveBufferSize >= 9000 + 14 + NetHeader.size)
        let big = testFrame(length: 9014, seed: 3, to: net.mac)
        _ = try net.send([big])
        #expect(try net.receiveFrames(1) == [big])
    }

    @Test func C6_noFrameLongerThanMTUPlus14() throws {
        let (f, net) = try attachNet("mtu=1000")
        #expect(throws: NetError.frameTooLong(length: 1015, limit: 1014)) {
            _ = try net.tx(0).pointee.transmit(count: 1) { _, _ in NetTxFrameInfo(length: 1015) }
        }
        #expect(f.personality.counters.txFrames == 0)
    }

    @Test func C7_standbyIsNotNegotiated() throws {
        // STANDBY (62) is for failover with a passthrough twin, which this driver does not do: a
        // SHOULD it does not follow, on purpose (DPDK's PMD does not either).
        #expect(!(try Self.acceptedFromEverything()).contains(62))
    }

    @Test func C8_outOfRangeSpeedAndDuplexAreUnknown() throws {
        let (f, net) = try attachNet("speed=100")
        #expect(net.config.speed == 100 && net.config.duplex == 1)
        f.changeDeviceConfig { c in
            for i in 0..<4 { c[NetConfigField.speed + i] = 0xff }
            c[NetConfigField.duplex] = 7
        }
        _ = try net.pollLink()
        #expect(net.config.speed == nil && net.config.duplex == nil)
    }

    @Test func C9_speedAndDuplexReReadAfterAConfigChange() throws {
        let (f, net) = try attachNet("speed=100")
        f.changeDeviceConfig { c in c[NetConfigField.speed] = 0xE8; c[NetConfigField.speed + 1] = 0x03; c[NetConfigField.duplex] = 0 }
        _ = try net.pollLink()
        #expect(net.config.speed == 1000 && net.config.duplex == 0)
    }

    @Test func C10_noHashReportNorRxExtraWithoutControlQueue() throws {
        let f = try Self.acceptedFromEverything(without: [NetFeature.ctrlVQ])
        #expect(!f.contains(57) && !f.contains(NetFeature.ctrlRXExtra))
    }

    @Test func T1_transmitHeaderIsTheReceiveHeaderSize() throws {
        // 12 bytes both ways with VERSION_1 and no hash report: a frame loops back byte for byte.
        #expect(NetHeader.size == 12)
        _ = try Self.cleanRun("")
    }

    @Test func T2_numBuffersZeroOnTransmit() throws { _ = try Self.cleanRun("mrg_rxbuf=on") }

    @Test func T3_flagsZeroWithoutCSUM() throws {
        let f = try Self.cleanRun("csum=on")  // offered, not asked for: never negotiated, flags 0
        #expect(!f.negotiatedFeatures.contains(NetFeature.csum))
    }

    @Test func T4_T5_T7_T8_T9_noSegmentationOffloadIsNegotiated() throws {
        let f = try Self.acceptedFromEverything(checksum: true)
        for b in [NetFeature.gso, NetFeature.hostTSO4, NetFeature.hostTSO6, NetFeature.hostECN, NetFeature.hostUFO, 56, 59] {
            #expect(!f.contains(b), "bit \(b)")
        }
        _ = try Self.cleanRun("")  // gso_type NONE on every frame, or the device would log it
    }

    @Test func T6_checksumOffsetsLieInsideTheFrame() throws {
        var o = NetAttachOptions()
        o.checksumOffload = true
        let (_, net) = try attachNet("csum=on", options: o)
        #expect(throws: NetError.self) {
            _ = try net.tx(0).pointee.transmit(count: 1) { _, _ in NetTxFrameInfo(length: 60, checksum: (start: 50, offset: 9)) }
        }
    }

    @Test func T10_noDataValidOrRSCInfoOnTransmit() throws {
        var o = NetAttachOptions()
        o.checksumOffload = true
        let (f, net) = try attachNet("csum=on", options: o)
        _ = try net.tx(0).pointee.transmit(count: 1) { _, b in
            NetTxFrameInfo(length: NetPackets.writeUDP(into: b, length: 80, destination: net.mac.array, source: [2, 0, 0, 0, 0, 1],
                                                       sourceIP: 0xA9FE_0001, destinationIP: 0xA9FE_0002), checksum: (start: 34, offset: 6))
        }
        #expect(f.personality.counters.txFrames == 1 && f.log.violations.isEmpty, "\(f.log.violations)")
    }

    @Test func T11_guestHdrLenNotNegotiated() throws {
        // GUEST_HDRLEN (59) matters only with segmentation offloads, which are never negotiated.
        #expect(!(try Self.acceptedFromEverything()).contains(59))
    }

    @Test func R1_buffersOf1526WithoutMergeable() throws {
        let (_, net) = try attachNet("mrg_rxbuf=off")
        #expect(net.receiveBufferSize >= 1526)
    }

    @Test func R2_mergeableBuffersHoldTheHeader() throws {
        var o = NetAttachOptions()
        o.receiveBufferSize = 11
        #expect(throws: NetError.self) { _ = try attachNet(options: o) }
        o.receiveBufferSize = 256
        let (f, net) = try attachNet(options: o)
        let frame = testFrame(length: 1500, seed: 4, to: net.mac)
        _ = try net.send([frame])
        #expect(try net.receiveFrames(1) == [frame])
        #expect(f.log.violations.isEmpty)
    }

    @Test func R3_headerSizeCountsEveryEnabledField() throws {
        // Hash report (+8) and tunnel fields are never negotiated, so the header is 12.
        let f = try Self.acceptedFromEverything()
        #expect(!f.contains(57) && !f.contains(52) && !f.contains(53) && NetHeader.size == 12)
    }

    @Test func R4_everyReceiveQueueInUseIsPopulated() throws {
        var o = NetAttachOptions()
        o.queuePairs = 3
        o.queueSize = 64
        let (_, net) = try attachNet("queues=3", options: o)
        for p in 0..<3 { #expect(net.rx(p).pointee.posted == 64) }
    }

    @Test func P1_P2_P3_P4_unknownFlagsAndUnusedChecksumFieldsAreIgnored() throws {
        let (_, net) = try attachNet("fault=rx_unknown_flags,fault_after=0")
        let frame = testFrame(length: 90, seed: 5, to: net.mac)
        _ = try net.send([frame])
        var burst = net.rx(0).pointee.makeBurst(capacity: 4)
        #expect(try net.rx(0).pointee.receive(into: &burst) == 1)
        #expect(burst[0].flags == 0, "unknown bits dropped, no checksum claim (P1, P4)")
        #expect(burst[0].checksumStart == 0 && burst[0].checksumOffset == 0, "csum fields without NEEDS_CSUM (P2)")
        #expect(burst[0].length == 90, "hdr_len is not used (P3)")
        #expect(net.rxStats(0).errors == 0)
    }

    @Test func P5_segmentedFramesWithoutTheFeatureAreNotAccepted() throws {
        let (_, net) = try attachNet("fault=rx_bad_gso,fault_after=0")
        _ = try net.send([testFrame(length: 90, seed: 5, to: net.mac), testFrame(length: 91, seed: 6, to: net.mac)])
        let got = try net.receiveFrames(2, rounds: 10)
        #expect(got.count == 1 && got[0].count == 91)
        #expect(net.rxStats(0).drops == 1 && net.rxStats(0).errors == 1)
    }

    @Test func F1_F2_noRXOrMACCommandWithoutCTRL_RX() throws {
        var o = NetAttachOptions()
        o.policy.forcedOff.insert(NetFeature.ctrlRX)
        let (f, net) = try attachNet(options: o)
        #expect(throws: NetError.self) { try net.setPromiscuous(true) }
        #expect(throws: NetError.self) { try net.setAllMulticast(true) }
        #expect(throws: NetError.self) { try net.setMACTable(unicast: [], multicast: []) }
        #expect(throws: NetError.self) { try net.setMAC(MACAddress([2, 0, 0, 0, 0, 9])) }
        #expect(f.personality.counters.controlCommands == 0 && net.controlCounters.sent == 0)
    }

    @Test func F3_aDriverChosenMACIsSetOnTheDevice() throws {
        var o = NetAttachOptions()
        o.policy.forcedOff.insert(NetFeature.mac)
        let (f, net) = try attachNet(options: o)
        #expect(f.personality.mac == net.mac.array, "MAC_ADDR_SET at attach")
    }

    @Test func F4_macTableLayoutWithEmptyTables() throws {
        let (f, net) = try attachNet()
        try net.setMACTable(unicast: [], multicast: [])
        try net.setMACTable(unicast: [MACAddress([2, 1, 2, 3, 4, 5])], multicast: [MACAddress([1, 0, 0x5E, 0, 0, 1]), MACAddress([0x33, 0x33, 0, 0, 0, 1])])
        #expect(f.personality.counters.controlErrors == 0 && f.log.violations.isEmpty)
    }

    @Test func A1_announceIsAcknowledged() throws {
        let (f, net) = try attachNet()
        f.requestAnnounce()
        #expect(try net.pollLink()?.announced == true && !f.personality.announcePending)
    }

    @Test func M1_M3_queuesSetUpBeforeVQPairsSet() throws { _ = try Self.cleanRun("queues=2", pairs: 2) }

    @Test func M2_pairCountWithinRange() throws {
        var o = NetAttachOptions()
        o.queuePairs = 2
        let (f, net) = try attachNet("queues=2", options: o)
        #expect(throws: NetError.queuePairs(asked: 0, available: 2)) { try net.setQueuePairs(0) }
        #expect(throws: NetError.queuePairs(asked: 3, available: 2)) { try net.setQueuePairs(3) }
        #expect(f.personality.counters.controlCommands == 1)
    }

    @Test func M4_noTransmitAboveTheEnabledPairs() throws {
        var o = NetAttachOptions()
        o.queuePairs = 2
        let (f, net) = try attachNet("queues=2", options: o)
        try net.setQueuePairs(1)
        #expect(throws: NetError.self) { _ = try net.send([testFrame(length: 60, seed: 1, to: net.mac)], pair: 1) }
        #expect(try net.send([testFrame(length: 60, seed: 1, to: net.mac)], pair: 0) == 1)
        try net.setQueuePairs(2)
        #expect(try net.send([testFrame(length: 60, seed: 2, to: net.mac)], pair: 1) == 1)
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
    }

    @Test func O1_S1_S2_N1_X1_noOffloadRSSHashCoalescingOrContextCommands() throws {
        // None of CTRL_GUEST_OFFLOADS, RSS, HASH_REPORT, NOTF_COAL, VQ_NOTF_COAL, RSS_CONTEXT is accepted,
        // so the commands that need them cannot be sent.
        let f = try Self.acceptedFromEverything()
        for b in [NetFeature.ctrlGuestOffloads, NetFeature.rss, 57, 53, 52, 55] { #expect(!f.contains(b), "bit \(b)") }
    }
}
