import VirtioCore
import VirtioRing
import VirtioWire

extension SoftPCIFunction where P == SoftNet {
    /// A software virtio-net PCI function. With backend=pair, use `netPair` for the two ends.
    public static func net(_ options: SoftNetOptions, address: String = "soft:net") throws(SoftDeviceError) -> SoftPCIFunction<SoftNet> {
        let personality = SoftNet(options: options)
        let f = try SoftPCIFunction(personality: personality, address: address, dmaBytes: options.dmaBytes,
                                    msixVectors: options.msixVectors, faults: options.faults, ringFeatures: options.ringFeatures)
        personality.function = f
        return f
    }

    /// Two functions wired back to back (backend=pair): the second's MAC is the first's with the
    /// last octet plus one.
    public static func netPair(_ options: SoftNetOptions, address: String = "soft:net") throws(SoftDeviceError)
        -> (SoftPCIFunction<SoftNet>, SoftPCIFunction<SoftNet>) {
        var o = options
        o.backend = .pair
        let a = try net(o, address: address + "/a")
        o.mac[5] &+= 1
        let b = try net(o, address: address + "/b")
        a.personality.peer = b.personality
        b.personality.peer = a.personality
        return (a, b)
    }

    /// A frame arrives for the driver on receive queue `pair` (of the pairs it enabled): filtered
    /// as the driver asked, then into its buffers. `checksumValid` marks it DATA_VALID with GUEST_CSUM.
    @discardableResult
    public func receive(pair: Int, frame: UnsafeRawBufferPointer, checksumValid: Bool = false) -> SoftDelivery {
        let net = personality
        guard live.load(ordering: .acquiring), busMaster.load(ordering: .acquiring), !stopped.load(ordering: .acquiring),
              net.linkUp else {
            net.count { $0.rxDropped &+= 1 }
            return .dropped
        }
        guard net.accepts(frame) else {
            net.count { $0.rxFiltered &+= 1 }
            return .dropped
        }
        let negotiated = negotiatedFeatures
        var header = NetHeader()
        if checksumValid, negotiated.contains(NetFeature.guestCsum) { header.flags = NetHeader.dataValid }
        let q = 2 * (pair % max(1, net.activePairs))
        let (result, why) = queues[q].deliver(frame, header: header, mergeable: negotiated.contains(NetFeature.mrgRxbuf),
                                              fault: net.rxFaultNow(), tamper: net.rxTamper, memory: arena, isr: isr)
        if let why { deviceError(why) }
        net.count { c in
            if result == .dropped { c.rxDropped &+= 1 } else { c.rxFrames &+= 1; c.rxBytes &+= UInt64(frame.count) }
        }
        return result
    }

    /// The link goes up or down (STATUS): config changes, the driver is notified.
    public func setLink(up: Bool) {
        if up { _ = personality.statusBits.bitwiseOr(NetStatusBit.linkUp, ordering: .relaxed) }
        else { _ = personality.statusBits.bitwiseAnd(~NetStatusBit.linkUp, ordering: .relaxed) }
        changeDeviceConfig { c in
            if up { c[NetConfigField.status] |= UInt8(NetStatusBit.linkUp) } else { c[NetConfigField.status] &= ~UInt8(NetStatusBit.linkUp) }
        }
    }

    /// The device asks the driver to announce itself (GUEST_ANNOUNCE; status bit 2 until ANNOUNCE_ACK).
    public func requestAnnounce() {
        _ = personality.statusBits.bitwiseOr(NetStatusBit.announce, ordering: .relaxed)
        changeDeviceConfig { c in c[NetConfigField.status] |= UInt8(NetStatusBit.announce) }
    }
}
