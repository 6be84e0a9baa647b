import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioWire

/// Where `check` sends frames on a virtio-net device: ARP requests from `address` asking for
/// `peer`. With a peer that answers (a kernel NIC on the other end of a QEMU hub), replies must
/// come back; with none, the frames must still be used, and a loop shows them again.
public struct NetCheckAddresses: Sendable {
    /// The IPv4 address the ARP requests come from (link-local).
    public var address: UInt32 = 0xA9FE_0002   // 169.254.0.2
    /// The address asked for; nil: nobody is expected to answer.
    public var peer: UInt32?
    /// The address the requests ask for: the peer's, or 169.254.0.1 when nobody is expected to answer.
    public var target: UInt32 { peer ?? 0xA9FE_0001 }
    public init() {}
}

extension DeviceChecker {
    /// The virtio-net steps: attach and config, control commands, and frames on each ring
    /// layout the device offers (and once without mergeable receive buffers).
    func netSteps() -> [() -> CheckStep] {
        var steps: [() -> CheckStep] = [{ self.netAttachStep() }, { self.netControlStep() }]
        var layouts: [(String, FeatureSet)] = []
        if offered.contains(VirtioFeature.ringPacked) { layouts.append(("packed", [])) }
        layouts.append(("split", [VirtioFeature.ringPacked]))
        if offered.contains(NetFeature.mrgRxbuf) {
            layouts.append(("split, one buffer per frame", [VirtioFeature.ringPacked, NetFeature.mrgRxbuf]))
        }
        for (name, off) in layouts { steps.append { self.netFramesStep(name, forcedOff: off) } }
        return steps
    }

    func attachNet(_ forcedOff: FeatureSet = [], pairs: Int? = nil) throws(NetError) -> NetDevice<T> {
        var o = NetAttachOptions()
        o.policy = FeaturePolicy(forcedOff: forcedOff)
        o.queuePairs = pairs
        o.timeoutMilliseconds = options.timeoutMilliseconds
        return try NetDevice(transport: transport, options: o, logger: logger)
    }

    func netAttachStep() -> CheckStep {
        var step = CheckStep(name: "net attach")
        var pairs = 1
        do {
            let net = try attachNet()
            let c = net.config
            pairs = c.usablePairs
            step.detail = "MAC \(net.mac)\(c.mac == nil ? " (driver-chosen: no VIRTIO_NET_F_MAC)" : ""), link \(net.linkUp ? "up" : "down"), "
                + "MTU \(c.mtu.map(String.init) ?? "1500 (no VIRTIO_NET_F_MTU)"), \(pairs) queue pair(s), "
                + "receive buffers \(net.has(NetFeature.mrgRxbuf) ? "mergeable" : "one per frame") of \(net.receiveBufferSize) bytes, "
                + "control queue \(net.hasControlQueue ? "yes" : "no")"
        } catch { step.findings.append(Classify.finding(error)) }
        // The first attach is gone (its deinit reset the device); every pair now, with MQ_VQ_PAIRS_SET.
        if pairs > 1, step.findings.isEmpty {
            do { step.detail += "; all \(try attachNet(pairs: pairs).activePairs) pairs enabled with MQ_VQ_PAIRS_SET" } catch {
                step.findings.append(Classify.finding(error))
            }
        }
        return step
    }

    func netControlStep() -> CheckStep {
        var step = CheckStep(name: "net control")
        let net: NetDevice<T>
        do { net = try attachNet() } catch {
            step.findings.append(Classify.finding(error))
            return step
        }
        guard net.hasControlQueue else { return CheckStep(name: "net control", outcome: .skip, detail: "VIRTIO_NET_F_CTRL_VQ not offered") }
        var done: [String] = []
        func run(_ what: String, _ body: () throws(NetError) -> Void) {
            do { try body(); done.append(what) } catch { step.findings.append(Classify.finding(error)) }
        }
        if net.has(NetFeature.ctrlRX) {
            run("RX_PROMISC 0") { () throws(NetError) in try net.setPromiscuous(false) }
            run("RX_ALLMULTI 1") { () throws(NetError) in try net.setAllMulticast(true) }
            run("RX_ALLMULTI 0") { () throws(NetError) in try net.setAllMulticast(false) }
            run("RX_PROMISC 1") { () throws(NetError) in try net.setPromiscuous(true) }
        }
        if net.has(NetFeature.ctrlMACAddr) {
            let mac = net.mac
            run("MAC_ADDR_SET") { () throws(NetError) in try net.setMAC(mac) }
            if net.has(NetFeature.ctrlRX) {
                run("MAC_TABLE_SET") { () throws(NetError) in try net.setMACTable(unicast: [mac], multicast: []) }
            }
        }
        if net.has(NetFeature.mq) {
            let n = net.config.usablePairs
            // Only one pair is attached here: asking for more is the driver's error, so stay at 1.
            run("MQ_VQ_PAIRS_SET 1 (of \(n))") { () throws(NetError) in try net.setQueuePairs(1) }
        }
        run("config re-read") { () throws(NetError) in _ = try net.pollLink() }
        step.detail = done.isEmpty ? "no command class negotiated" : "acked OK: " + done.joined(separator: ", ")
        return step
    }

    /// Sends ARP requests on pair 0 and takes what comes back within the timeout.
    func netFramesStep(_ name: String, forcedOff: FeatureSet) -> CheckStep {
        var step = CheckStep(name: "net frames \(name)")
        let frames = 16
        let net: NetDevice<T>
        do { net = try attachNet(forcedOff) } catch {
            step.findings.append(Classify.finding(error))
            return step
        }
        let mac = net.mac.array
        let peer = options.net.peer
        var own = 0, replies = 0, other = 0, sent = 0
        var deadline = PollDeadline(milliseconds: options.timeoutMilliseconds)
        do throws(NetError) {
            let tx = net.tx(0), rx = net.rx(0)
            var burst = rx.pointee.makeBurst(capacity: 32)
            let source = options.net.address, target = options.net.target
            while sent < frames {
                sent += try tx.pointee.transmit(count: frames - sent) { _, buffer in
                    NetTxFrameInfo(length: NetPackets.writeARPRequest(into: buffer, source: mac, sourceIP: source,
                                                                      targetIP: target))
                }
                if deadline.expired() { break }
            }
            // Every frame given must be used (Virtqueues: none may stay with the device), and a peer must answer.
            while !deadline.expired() {
                try tx.pointee.reclaim()
                let n = try rx.pointee.receive(into: &burst)
                for i in 0..<n {
                    let f = burst[i].first
                    let frame = UnsafeRawBufferPointer(start: f.baseAddress, count: min(f.count, burst[i].length))
                    if frame.count >= 12, (0..<6).allSatisfy({ frame[6 + $0] == mac[$0] }) { own += 1 }
                    else if let r = NetPackets.arpReply(frame, to: mac), r.ip == peer { replies += 1 }
                    else { other += 1 }
                }
                let txDone = tx.pointee.inFlight == 0
                if txDone, peer == nil ? own >= sent : replies >= 1 { break }
            }
            if let v = rx.pointee.lastFault {
                step.findings.append(CheckFinding(.must, clause: v.rule, "a received frame: \(v.description)"))
            }
            _ = try net.pollLink()
            if tx.pointee.inFlight > 0 {
                step.findings.append(CheckFinding(.failure, clause: Clause.completes,
                    "transmit queue 1: \(tx.pointee.inFlight) of \(sent) frames not used within \(options.timeoutMilliseconds) ms"))
            }
        } catch { step.findings.append(Classify.finding(error)) }
        if let peer, replies == 0, step.findings.isEmpty {
            step.findings.append(CheckFinding(.failure, clause: Clause.netDelivers,
                "no ARP reply from \(NetPackets.dotted(peer)) within \(options.timeoutMilliseconds) ms to \(sent) requests"))
        }
        step.detail = "\(sent) ARP requests for \(NetPackets.dotted(options.net.target)) sent and used; received \(own) of ours back, "
            + "\(replies) ARP repl\(replies == 1 ? "y" : "ies") from the peer, \(other) other frame(s); "
            + "\(net.has(NetFeature.mrgRxbuf) ? "mergeable" : "one-per-frame") buffers, \(net.device.queues.first?.layout.rawValue ?? "?") ring"
        return step
    }
}

extension Classify {
    static func finding(_ e: NetError) -> CheckFinding {
        switch e {
        case let .violation(v): CheckFinding(.must, clause: v.rule, v.description)
        case let .virtio(v): finding(v)
        case let .invalidConfig(why): CheckFinding(.must, clause: Clause.netConfig, why)
        case let .timeout(ms, what): CheckFinding(.failure, clause: Clause.completes, "no answer within \(ms) ms to \(what)")
        case let .commandRefused(what): CheckFinding(.failure, clause: Clause.netControlAccepted, "VIRTIO_NET_ERR to \(what)")
        default: CheckFinding(.failure, clause: Clause.checker, e.description)
        }
    }
}
