import Logging
import VirtioCore
import VirtioRing
import VirtioWire

/// How to attach a net device.
public struct NetAttachOptions: Sendable {
    public var policy = FeaturePolicy()
    /// Queue pairs to use (nil: 1, as testpmd's --rxq/--txq default).
    public var queuePairs: Int?
    /// Ring size (nil: the device's maximum, at most 256 as DPDK's default).
    public var queueSize: Int?
    /// Bytes of each receive buffer, header included (nil: 2048 with mergeable buffers, else
    /// enough for MTU + 14 + 12, at least 1526: net.tex "Setting Up Receive Buffers").
    public var receiveBufferSize: Int?
    /// Negotiate VIRTIO_NET_F_CSUM / GUEST_CSUM: NEEDS_CSUM / DATA_VALID go to and from the caller.
    public var checksumOffload = false
    /// How long a control command may take.
    public var timeoutMilliseconds = 5_000
    /// MSI-X: vector 0 for configuration changes, 1+N for receive queue N; the rest poll.
    public var interrupts = false
    public init() {}
}

/// The virtio-net device-type bits this driver understands (no segmentation offloads).
public let netDriverFeatures: FeatureSet = [
    NetFeature.mac, NetFeature.status, NetFeature.mtu, NetFeature.mrgRxbuf, NetFeature.ctrlVQ, NetFeature.ctrlRX,
    NetFeature.ctrlMACAddr, NetFeature.mq, NetFeature.speedDuplex, NetFeature.guestAnnounce,
]

/// Bits that need CTRL_VQ (net.tex "Feature bit requirements"; H12).
let netNeedsControlQueue: [Int] = [NetFeature.ctrlRX, NetFeature.ctrlMACAddr, NetFeature.guestAnnounce, NetFeature.mq,
                                   NetFeature.ctrlRXExtra, NetFeature.ctrlVLAN]

/// Drops what the net driver must not accept from `chosen`: anything needing CTRL_VQ when CTRL_VQ
/// is not there (G1, C10, H12), and MTU when the device's `mtu` is below IPv4's 68 (H10).
public func netFeatureDependencies(_ chosen: FeatureSet, mtu: UInt16?) -> FeatureSet {
    var f = chosen
    if !f.contains(NetFeature.ctrlVQ) { for b in netNeedsControlQueue { f.remove(b) } }
    if f.contains(NetFeature.mtu), let mtu, mtu < 68 { f.remove(NetFeature.mtu) }
    return f
}

/// What `pollLink` saw change.
public struct NetLinkEvent: Sendable, Equatable {
    public var linkUp: Bool
    public var linkChanged: Bool
    /// The device asked for an announcement and the driver acknowledged it (A1).
    public var announced: Bool
    public init(linkUp: Bool, linkChanged: Bool, announced: Bool) {
        self.linkUp = linkUp
        self.linkChanged = linkChanged
        self.announced = announced
    }
}

/// A virtio-net device: negotiation with the dependency rules, config checked, N queue pairs,
/// the control queue, link state. Drive queues from one thread each with `rx`/`tx` pointers.
public final class NetDevice<T: VirtioTransport> {
    public let device: VirtioDevice<T>
    public internal(set) var config: NetConfig
    /// The MAC in use: the device's, or a random locally administered one (C2, H13).
    public internal(set) var mac: MACAddress
    public let queuePairs: Int
    /// Pairs the device was told to use (VQ_PAIRS_SET); M3/M4: transmit only on these.
    public internal(set) var activePairs = 1
    /// Receive buffer size and the longest frame sent (MTU + 14).
    public let receiveBufferSize: Int
    public let maxFrame: Int
    public let timeoutMilliseconds: Int
    let rxQueues: UnsafeMutablePointer<NetRxQueue<T>>
    let txQueues: UnsafeMutablePointer<NetTxQueue<T>>
    var control: NetControlQueue<T>?
    var configFD: Int32 = -1
    /// Queues set up so far (all of them once init returns).
    var madeRx = 0, madeTx = 0
    var generation: UInt8
    public internal(set) var violation: NetViolation?
    public let logger: Logger

    public var negotiated: FeatureSet { device.negotiated }
    public func has(_ bit: Int) -> Bool { device.has(bit) }
    public var hasControlQueue: Bool { control != nil }
    public var linkUp: Bool { config.linkUp }

    /// Negotiates, reads and checks the config, sets up the queues and the control queue, sets
    /// DRIVER_OK, fills every receive queue (R4) and, with more than one pair, sends VQ_PAIRS_SET (M1).
    /// On failure the device is left FAILED or reset, never half-running.
    public init(transport: T, options: NetAttachOptions = NetAttachOptions(),
                logger: Logger = Logger(label: "virtio.net")) throws(NetError) {
        let device = VirtioDevice(transport: transport, logger: logger)
        self.device = device
        self.logger = logger
        timeoutMilliseconds = options.timeoutMilliseconds
        guard transport.deviceType == .net else {
            throw .wrongDeviceType("\(transport.name) is a virtio \(transport.deviceTypeName) device, not a network device")
        }
        var bits = netDriverFeatures
        if options.checksumOffload { bits = bits.union([NetFeature.csum, NetFeature.guestCsum]) }
        do {
            try device.initialize(policy: options.policy, deviceTypeBits: bits) { (chosen) throws(VirtioError) -> FeatureSet in
                var mtu: UInt16?
                if chosen.contains(NetFeature.mtu) {
                    mtu = try device.readConfig { (c: ConfigReader) throws(VirtioError) in try c.u16(NetConfigField.mtu) }
                }
                return netFeatureDependencies(chosen, mtu: mtu)
            }
        } catch {
            throw .virtio(error)
        }
        let f = device.negotiated
        do {
            config = try NetConfig.read(from: device, features: f)
            generation = try transport.configGeneration()
        } catch {
            device.fail()
            throw .virtio(error)
        }
        if let m = config.mac, !m.isZero, !m.isMulticast { mac = m } else { mac = .randomLocal() }
        let available = config.usablePairs
        let pairs = options.queuePairs ?? 1
        guard pairs >= 1, pairs <= available else {
            device.fail()
            throw .queuePairs(asked: pairs, available: available)
        }
        queuePairs = pairs
        let mtuFrame = config.mtu.map { Int($0) + 14 } ?? 1514
        maxFrame = mtuFrame
        let mergeable = f.contains(NetFeature.mrgRxbuf)
        // R1 / C5: without mergeable buffers each buffer holds a whole frame; with them, any size >= 12 (R2).
        let minimum = mergeable ? NetHeader.size : max(1526, NetHeader.size + mtuFrame)
        let size = options.receiveBufferSize ?? (mergeable ? 2048 : (minimum + 63) & ~63)
        guard size >= minimum, size <= 65536 else {
            device.fail()
            throw .invalidRequest("receive buffers of \(size) bytes: this device needs \(minimum)...65536"
                + (mergeable ? "" : " without mergeable buffers (frames up to MTU + 14 = \(mtuFrame) plus the 12-byte header)"))
        }
        receiveBufferSize = size
        rxQueues = .allocate(capacity: pairs)
        txQueues = .allocate(capacity: pairs)
        do throws(NetError) {
            var fds: [Int32] = []
            if options.interrupts {
                let table = transport.interruptVectors
                guard table >= pairs + 1 else {
                    throw NetError.invalidRequest("\(pairs) queue pair(s) in interrupt mode need \(pairs + 1) MSI-X vectors and \(transport.name) has \(table); use poll mode")
                }
                do {
                    fds = try transport.enableInterrupts(count: pairs + 1)
                    if try transport.setConfigVector(0) != nil { configFD = fds[0] }
                } catch { throw NetError.virtio(error) }
            }
            let csum = f.contains(NetFeature.csum), guestCsum = f.contains(NetFeature.guestCsum)
            let wanted = options.queueSize ?? 256
            for i in 0..<pairs {
                do {
                    let vector: UInt16? = fds.isEmpty ? nil : UInt16(1 + i)
                    let r = try device.makeQueue(2 * i, size: wanted, vector: vector)
                    (rxQueues + i).initialize(to: try NetRxQueue(virtqueue: r, pair: i, bufferSize: size, mergeable: mergeable,
                                                                 checksumFlags: guestCsum, dma: transport.dma))
                    madeRx += 1
                    if let v = rxQueues[i].virtqueue.vector { rxQueues[i].interruptFD = fds[Int(v)] }
                    let t = try device.makeQueue(2 * i + 1, size: wanted)
                    (txQueues + i).initialize(to: try NetTxQueue(virtqueue: t, pair: i, maxFrame: mtuFrame,
                                                                 checksumOffload: csum, dma: transport.dma))
                    madeTx += 1
                } catch let e as VirtioError { throw NetError.virtio(e) } catch let e as NetError { throw e } catch {
                    throw NetError.invalidRequest("\(error)")
                }
            }
            if f.contains(NetFeature.ctrlVQ) {
                let index = f.contains(NetFeature.mq) ? 2 * available : 2
                do { control = try NetControlQueue(virtqueue: try device.makeQueue(index, size: 64), dma: transport.dma) }
                catch let e as VirtioError { throw NetError.virtio(e) } catch let e as NetError { throw e } catch {
                    throw NetError.invalidRequest("\(error)")
                }
            }
            do { try device.driverOK() } catch { throw NetError.virtio(error) }
            for i in 0..<pairs { try rxQueues[i].refill() }
            if pairs > 1 { try setQueuePairs(pairs) }
            // F3 / H13: a driver-chosen MAC is installed where the device takes one.
            if mac != config.mac, has(NetFeature.ctrlMACAddr), has(NetFeature.ctrlRX) { try setMAC(mac) }
        } catch {
            // self is whole here, so deinit runs: it frees what was made and resets the device.
            device.fail()
            throw error
        }
    }

    /// Resets the device (nothing is left running), then frees the queues.
    deinit {
        try? device.reset()
        device.transport.disableInterrupts()
        rxQueues.deinitialize(count: madeRx)
        txQueues.deinitialize(count: madeTx)
        rxQueues.deallocate()
        txQueues.deallocate()
    }

    /// Receive queue `pair`, for the one thread that drives it.
    public func rx(_ pair: Int) -> UnsafeMutablePointer<NetRxQueue<T>> {
        precondition(pair >= 0 && pair < queuePairs, "receive queue \(pair) of \(queuePairs)")
        return rxQueues + pair
    }

    /// Transmit queue `pair`, for the one thread that drives it.
    public func tx(_ pair: Int) -> UnsafeMutablePointer<NetTxQueue<T>> {
        precondition(pair >= 0 && pair < queuePairs, "transmit queue \(pair) of \(queuePairs)")
        return txQueues + pair
    }

    public func rxStats(_ pair: Int) -> NetQueueStats { rx(pair).pointee.stats }
    public func txStats(_ pair: Int) -> NetQueueStats { tx(pair).pointee.stats }
    public func rxCounters(_ pair: Int) -> QueueCounters { rx(pair).pointee.virtqueue.counters }
    public func txCounters(_ pair: Int) -> QueueCounters { tx(pair).pointee.virtqueue.counters }
}
