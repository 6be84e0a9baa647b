import VirtioCore
import VirtioRing
import VirtioWire

extension SoftNet {
    /// One control command: `u8 class; u8 command; data` readable, `u8 ack` writable (net.tex
    /// "Control Virtqueue"). Commands whose feature was not negotiated are refused and logged.
    func control(_ io: ChainIO<DMAArena>, negotiated: FeatureSet) -> RequestOutcome {
        let readable = io.readableBytes
        // QEMU: "ctrl missing headers" stops the device; so does this one.
        guard readable >= 2, io.writableBytes >= 1, readable <= 1 << 16 else {
            return .malformed("control queue: a command needs 2+ readable bytes and a writable ack byte (got \(readable) and \(io.writableBytes))")
        }
        var bytes = [UInt8](repeating: 0, count: readable)
        guard bytes.withUnsafeMutableBytes({ io.read(at: 0, into: $0.baseAddress!, length: readable) }) else {
            return .malformed("control queue: the command is outside the driver's memory")
        }
        let ok = execute(bytes[0], bytes[1], Array(bytes[2...]), negotiated: negotiated)
        count { $0.controlCommands &+= 1; if !ok { $0.controlErrors &+= 1 } }
        var ack = ok ? NetControl.ok : NetControl.err
        if options.netFault == .ctrlBadAck { ack = 7 }  // fault: neither OK nor ERR
        guard withUnsafeBytes(of: &ack, { io.write(at: 0, from: $0.baseAddress!, length: 1) }) else {
            return .malformed("control queue: the ack byte is outside the driver's memory")
        }
        return .used(1)
    }

    private func violation(_ rule: String, _ detail: String) { function?.log.violation(rule, detail) }

    /// Carries out a command; false means VIRTIO_NET_ERR.
    func execute(_ cls: UInt8, _ cmd: UInt8, _ data: [UInt8], negotiated f: FeatureSet) -> Bool {
        switch cls {
        case NetControl.classRX:
            guard f.contains(NetFeature.ctrlRX) else {
                violation("net Control Virtqueue / Packet Receive Filtering: without VIRTIO_NET_F_CTRL_RX the driver MUST NOT send RX class commands",
                          "RX command \(cmd)")
                return false
            }
            guard cmd == NetControl.rxPromisc || cmd == NetControl.rxAllMulti else {
                violation("net Packet Receive Filtering: without VIRTIO_NET_F_CTRL_RX_EXTRA the driver MUST NOT send ALLUNI, NOMULTI, NOUNI or NOBCAST",
                          "RX command \(cmd)")
                return false
            }
            guard data.count == 1, data[0] <= 1 else { return false }
            state.withLock { s in
                if cmd == NetControl.rxPromisc { s.promiscuous = data[0] == 1 } else { s.allMulticast = data[0] == 1 }
            }
            return true
        case NetControl.classMAC:
            if cmd == NetControl.macAddrSet {
                guard f.contains(NetFeature.ctrlMACAddr) else {
                    violation("net Setting MAC Address Filtering: MAC_ADDR_SET needs VIRTIO_NET_F_CTRL_MAC_ADDR", "MAC_ADDR_SET sent")
                    return false
                }
                guard data.count == 6, data[0] & 1 == 0 else { return false }
                macBits.store(Self.pack(data), ordering: .relaxed)
                // The config follows, and config_generation moves with it.
                function?.changeDeviceConfig(notify: false) { c in for i in 0..<6 { c[NetConfigField.mac + i] = data[i] } }
                return true
            }
            guard cmd == NetControl.macTableSet, f.contains(NetFeature.ctrlRX) else {
                violation("net Setting MAC Address Filtering: without VIRTIO_NET_F_CTRL_RX the driver MUST NOT send MAC class commands",
                          "MAC command \(cmd)")
                return false
            }
            guard let tables = NetControl.macTables(data) else {
                violation("net Setting MAC Address Filtering: TABLE_SET data is le32 N, N addresses, le32 M, M addresses",
                          "TABLE_SET of \(data.count) bytes that do not add up")
                return false
            }
            state.withLock { s in s.unicast = tables.0; s.multicast = tables.1 }
            return true
        case NetControl.classAnnounce:
            guard f.contains(NetFeature.guestAnnounce), cmd == NetControl.announceAck,
                  statusBits.load(ordering: .relaxed) & NetStatusBit.announce != 0 else { return false }
            _ = statusBits.bitwiseAnd(~NetStatusBit.announce, ordering: .relaxed)
            function?.changeDeviceConfig(notify: false) { c in c[NetConfigField.status] &= ~UInt8(NetStatusBit.announce) }
            return true
        case NetControl.classMQ:
            guard f.contains(NetFeature.mq), cmd == NetControl.mqPairsSet, data.count == 2 else {
                if !f.contains(NetFeature.mq) {
                    violation("net Control Virtqueue / Multiqueue: MQ commands need VIRTIO_NET_F_MQ", "MQ command \(cmd)")
                }
                return false
            }
            let n = Int(data[0]) | Int(data[1]) << 8
            guard n >= 1, n <= pairs else {
                violation("net Automatic receive steering in multiqueue mode: the driver MUST NOT request 0 pairs or more than max_virtqueue_pairs",
                          "VQ_PAIRS_SET \(n) with max_virtqueue_pairs \(pairs)")
                return false
            }
            if let fn = function, let idle = (0..<2 * n).first(where: { q in fn.queues[q].state.withLock { $0.ring == nil } }) {
                violation("net Automatic receive steering in multiqueue mode: the driver MUST configure the virtqueues before enabling them with VQ_PAIRS_SET",
                          "VQ_PAIRS_SET \(n) with queue \(idle) not set up")
            }
            activePairsCount.store(n, ordering: .relaxed)
            return true
        default:
            return false
        }
    }
}
