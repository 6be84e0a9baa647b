import VirtioCore
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// Control-queue commands and link state of a net device.
extension NetDevice {
    func command(_ cls: UInt8, _ cmd: UInt8, _ data: [UInt8], what: String) throws(NetError) {
        guard control != nil else { throw .notNegotiated("VIRTIO_NET_F_CTRL_VQ (the control queue, for \(what))") }
        let health = { [device] () throws(NetError) in
            do throws(VirtioError) { try device.checkHealth() } catch { throw .virtio(error) }
        }
        try control!.send(cls, cmd, data, what: what, timeoutMilliseconds: timeoutMilliseconds, healthCheck: health)
    }

    /// RX_PROMISC (F1: only with CTRL_RX).
    public func setPromiscuous(_ on: Bool) throws(NetError) {
        guard has(NetFeature.ctrlRX) else { throw .notNegotiated("VIRTIO_NET_F_CTRL_RX (promiscuous mode)") }
        try command(NetControl.classRX, NetControl.rxPromisc, [on ? 1 : 0], what: "RX_PROMISC \(on ? 1 : 0)")
    }

    /// RX_ALLMULTI (F1: only with CTRL_RX).
    public func setAllMulticast(_ on: Bool) throws(NetError) {
        guard has(NetFeature.ctrlRX) else { throw .notNegotiated("VIRTIO_NET_F_CTRL_RX (all-multicast mode)") }
        try command(NetControl.classRX, NetControl.rxAllMulti, [on ? 1 : 0], what: "RX_ALLMULTI \(on ? 1 : 0)")
    }

    /// MAC_ADDR_SET (only with CTRL_MAC_ADDR); the MAC in use changes when the device takes it.
    public func setMAC(_ m: MACAddress) throws(NetError) {
        guard has(NetFeature.ctrlMACAddr) else { throw .notNegotiated("VIRTIO_NET_F_CTRL_MAC_ADDR (setting the MAC)") }
        // F2: the MAC class as a whole needs CTRL_RX.
        guard has(NetFeature.ctrlRX) else { throw .notNegotiated("VIRTIO_NET_F_CTRL_RX (MAC-class commands)") }
        guard !m.isMulticast, !m.isZero else { throw .invalidRequest("\(m) is not a unicast address") }
        try command(NetControl.classMAC, NetControl.macAddrSet, m.array, what: "MAC_ADDR_SET \(m)")
        mac = m
        // The device's config follows (QEMU's does): what it reports now is what `pollLink` compares with.
        try refreshConfig()
    }

    /// MAC_TABLE_SET (F2, F4): unicast then multicast, each le32-counted.
    public func setMACTable(unicast: [MACAddress], multicast: [MACAddress]) throws(NetError) {
        guard has(NetFeature.ctrlRX) else { throw .notNegotiated("VIRTIO_NET_F_CTRL_RX (the MAC filter table)") }
        var d: [UInt8] = []
        func table(_ list: [MACAddress]) {
            let n = UInt32(list.count)
            d += [UInt8(n & 0xff), UInt8(n >> 8 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 24)]
            for m in list { d += m.array }
        }
        table(unicast)
        table(multicast)
        try command(NetControl.classMAC, NetControl.macTableSet, d, what: "MAC_TABLE_SET (\(unicast.count) unicast, \(multicast.count) multicast)")
    }

    /// MQ_VQ_PAIRS_SET (M1, M2): every queue is set up before; 1...max pairs.
    public func setQueuePairs(_ n: Int) throws(NetError) {
        guard has(NetFeature.mq) else { throw .notNegotiated("VIRTIO_NET_F_MQ (queue pairs)") }
        guard n >= 1, n <= queuePairs else { throw .queuePairs(asked: n, available: queuePairs) }
        // M4: from the moment the command is in the ring, no frame on a pair above n.
        for i in 0..<queuePairs { tx(i).pointee.enabled = i < n }
        do {
            try command(NetControl.classMQ, NetControl.mqPairsSet, [UInt8(n & 0xff), UInt8(n >> 8)], what: "MQ_VQ_PAIRS_SET \(n)")
        } catch {
            for i in 0..<queuePairs { tx(i).pointee.enabled = i < activePairs }
            throw error
        }
        activePairs = n
    }

    /// Re-reads the config (inside the generation loop) without comparing.
    func refreshConfig() throws(NetError) {
        do {
            config = try NetConfig.read(from: device, features: negotiated)
            generation = try device.transport.configGeneration()
        } catch { throw .virtio(error) }
    }

    /// Looks at the config: link changes (C3) and announce requests, acknowledged with ANNOUNCE_ACK
    /// (A1). A MAC or pair count that changed while config_generation did not is a violation, as
    /// is an MTU that changed at all (C4: the device MUST NOT change it). In interrupt mode the
    /// config vector's eventfd is drained first. Returns nil when nothing changed.
    public func pollLink() throws(NetError) -> NetLinkEvent? {
        if let violation { throw .violation(violation) }
        if configFD >= 0 {
            var count: UInt64 = 0
            _ = read(configFD, &count, 8)  // nonblocking eventfd: 0 or the count, either way re-read below
        }
        let before = config, beforeGeneration = generation
        let now: NetConfig, g: UInt8
        do {
            try device.checkHealth()
            g = try device.transport.configGeneration()
            now = try NetConfig.read(from: device, features: negotiated)
        } catch { throw .virtio(error) }
        if g == beforeGeneration {
            if now.mac != before.mac {
                return try silent("mac", before.mac.map { "\($0)" } ?? "-", now.mac.map { "\($0)" } ?? "-")
            }
            if now.maxQueuePairs != before.maxQueuePairs {
                return try silent("max_virtqueue_pairs", "\(before.maxQueuePairs ?? 0)", "\(now.maxQueuePairs ?? 0)")
            }
        }
        if now.mtu != before.mtu { logger.warning("the device changed its MTU from \(before.mtu ?? 0) to \(now.mtu ?? 0); it MUST NOT") }
        config = now
        generation = g
        var announced = false
        if now.announceRequested, has(NetFeature.guestAnnounce) {
            try command(NetControl.classAnnounce, NetControl.announceAck, [], what: "ANNOUNCE_ACK")
            announced = true
        }
        guard now.linkUp != before.linkUp || announced else { return nil }
        return NetLinkEvent(linkUp: now.linkUp, linkChanged: now.linkUp != before.linkUp, announced: announced)
    }

    private func silent(_ field: String, _ was: String, _ now: String) throws(NetError) -> NetLinkEvent? {
        let v = NetViolation.configChangedSilently(field: field, was: was, now: now)
        violation = v
        throw .violation(v)
    }

    /// Control commands sent and refused.
    public var controlCounters: (sent: UInt64, refused: UInt64) {
        (control?.commandsSent ?? 0, control?.commandsRefused ?? 0)
    }
}
