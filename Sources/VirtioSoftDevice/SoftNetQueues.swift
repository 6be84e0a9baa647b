import VirtioCore
import VirtioRing
import VirtioWire

extension SoftNet {
    /// A transmit chain: header checks (net.tex "Packet Transmission" driver MUSTs), then the frame
    /// goes to the backend. Completed with used length 0, as QEMU does (digest §4).
    func transmit(pair: Int, _ io: ChainIO<DMAArena>, negotiated: FeatureSet) -> RequestOutcome {
        let log = function?.log
        if io.writableBytes > 0 {
            log?.violation("net Packet Transmission: transmit buffers are device-readable only",
                           "transmit queue \(2 * pair + 1): a chain with \(io.writableBytes) device-writable bytes")
        }
        let total = io.readableBytes
        // QEMU stops the device for both ("header incorrect", "nothing to send"): so does this one.
        guard total > NetHeader.size else {
            return .malformed("transmit queue \(2 * pair + 1): a chain of \(total) readable bytes holds no frame after the 12-byte header")
        }
        var raw = (UInt64(0), UInt32(0))
        let header = withUnsafeMutableBytes(of: &raw) { b -> NetHeader? in
            io.read(at: 0, into: b.baseAddress!, length: NetHeader.size) ? NetHeader(loading: b.baseAddress!) : nil
        }
        guard let header else { return .malformed("transmit queue \(2 * pair + 1): the header is outside the driver's memory") }
        checkHeader(header, pair: pair, negotiated: negotiated, log: log)
        let length = total - NetHeader.size
        if let mtu = options.mtu, negotiated.contains(NetFeature.mtu), length > Int(mtu) + 14 {
            log?.violation("net Device configuration layout: with VIRTIO_NET_F_MTU the driver MUST NOT transmit a packet longer than mtu + 14",
                           "transmit queue \(2 * pair + 1): a \(length)-byte frame with mtu \(mtu)")
        }
        if pair >= activePairs {
            log?.violation("net Automatic receive steering in multiqueue mode: the driver MUST NOT use transmit queues above the pairs it enabled (VQ_PAIRS_SET)",
                           "frame on transmit queue \(2 * pair + 1) with \(activePairs) pair(s) enabled")
        }
        guard linkUp, length <= ReceiveDelivery.capacity - NetHeader.size else {
            count { $0.txDropped &+= 1 }  // link down: consumed and dropped (QEMU)
            return .used(0)
        }
        let buffer = txScratch[pair]
        guard io.read(at: NetHeader.size, into: buffer, length: length) else {
            return .malformed("transmit queue \(2 * pair + 1): the frame is outside the driver's memory")
        }
        var valid = false
        if header.flags & NetHeader.needsChecksum != 0, negotiated.contains(NetFeature.csum) {
            valid = Self.completeChecksum(buffer, length: length, start: Int(header.checksumStart), offset: Int(header.checksumOffset))
        }
        count { $0.txFrames &+= 1; $0.txBytes &+= UInt64(length) }
        strikeNetFault()
        let frame = UnsafeRawBufferPointer(start: buffer, count: length)
        switch options.backend {
        case .null: break
        case .loop: function?.receive(pair: pair, frame: frame, checksumValid: valid)
        case .pair: peer?.function?.receive(pair: pair, frame: frame, checksumValid: valid)
        }
        return .used(0)
    }

    /// T2, T3, T7, T10 (net.tex "Packet Transmission", driver requirements).
    func checkHeader(_ h: NetHeader, pair: Int, negotiated: FeatureSet, log: ConformanceLog?) {
        let q = 2 * pair + 1
        if h.numBuffers != 0 {
            log?.violation("net Packet Transmission: the driver MUST set num_buffers to zero", "transmit queue \(q): num_buffers \(h.numBuffers)")
        }
        if h.flags & NetHeader.needsChecksum != 0, !negotiated.contains(NetFeature.csum) {
            log?.violation("net Packet Transmission: without VIRTIO_NET_F_CSUM the driver MUST set flags to zero", "transmit queue \(q): flags 0x\(String(h.flags, radix: 16))")
        }
        if h.flags & (NetHeader.dataValid | NetHeader.rscInfo) != 0 {
            log?.violation("net Packet Transmission: the driver MUST NOT set VIRTIO_NET_HDR_F_DATA_VALID or RSC_INFO", "transmit queue \(q): flags 0x\(String(h.flags, radix: 16))")
        }
        if h.gsoType != NetHeader.gsoNone {
            log?.violation("net Packet Transmission: without HOST_TSO4/TSO6/UFO/USO the driver MUST set gso_type to VIRTIO_NET_HDR_GSO_NONE", "transmit queue \(q): gso_type \(h.gsoType)")
        }
    }

    /// NEEDS_CSUM: the ones'-complement sum from csum_start to the end goes at csum_start + csum_offset
    /// (the driver put the pseudo-header sum there). False when the offsets lie outside the frame.
    static func completeChecksum(_ p: UnsafeMutableRawPointer, length: Int, start: Int, offset: Int) -> Bool {
        guard start + offset + 2 <= length, start < length else { return false }
        let sum = NetPackets.onesComplementSum(p + start, count: length - start)
        let v = ~sum
        p.storeBytes(of: UInt8(v >> 8), toByteOffset: start + offset, as: UInt8.self)
        p.storeBytes(of: UInt8(v & 0xff), toByteOffset: start + offset + 1, as: UInt8.self)
        return true
    }

    /// The config-lie faults: the MAC or the pair count changes with config_generation left alone.
    func strikeNetFault() {
        guard let f = options.netFault, f != .ctrlBadAck, counters.txFrames >= UInt64(options.faults.faultAfterRequests),
              !netFaultFired.exchange(true, ordering: .relaxed), let fn = function else { return }
        fn.changeDeviceConfig(silently: true) { c in
            if f == .macSilent { c[NetConfigField.mac + 5] ^= 0x01 } else { c[NetConfigField.maxVirtqueuePairs] &+= 1 }
        }
    }
}
