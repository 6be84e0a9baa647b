import HostIO
import Synchronization
import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// How to reach a vhost-user backend: `vhost-user:PATH[,type=blk|net][,timeout=MS][,queue_size=N][,queues=N][,mac=M]`.
public struct VhostUserFrontendOptions: Sendable {
    public var path: String
    /// vhost-user does not say what the device is; the spelling does (blk by default).
    public var deviceType: VirtioDeviceType = .block
    /// Bytes of shared memory for rings and buffers (one memfd region of the memory table).
    public var dmaBytes = 64 << 20
    public var timeoutMilliseconds = 5_000
    /// The largest ring the backend is asked for: vhost-user has no way to ask the backend, so
    /// 256, QEMU's virtio-blk default (qemu-storage-daemon takes up to 1024, `soft:blk` its queue_size).
    public var maxQueueSize = 256
    /// Where the region sits in the backend's guest-physical space (descriptor addresses).
    public var guestBase: UInt64 = 0x4000_0000
    /// net: the queue pairs offered to the driver (within the backend's GET_QUEUE_NUM; 1 without MQ).
    public var netPairs = 1
    /// net: the MAC the emulated config shows (a random locally administered one when nil).
    public var mac: [UInt8]?
    public init(path: String) { self.path = path }
}

/// A virtio device in another process, reached over vhost-user (QEMU docs/interop/vhost-user.rst):
/// the `VirtioTransport` that DPDK calls virtio-user. The device status machine is kept here (the
/// protocol has none): FEATURES_OK sends SET_FEATURES, a queue's set-up sends NUM / BASE / ADDR,
/// its enable sends KICK / CALL / ENABLE, and a reset stops every ring with GET_VRING_BASE.
/// Kicks are eventfd writes (qemu-storage-daemon never polls); every queue gets a call eventfd
/// even in poll mode (qemu-storage-daemon writes it on every completion).
public final class VhostUserFrontend: VirtioTransport, TransportDescribing, @unchecked Sendable {
    public let name: String
    public let deviceType: VirtioDeviceType?
    public var deviceID: UInt16 { deviceType?.rawValue ?? 0 }
    let session: FrontendSession
    let memory: SharedDMAMemory
    public var dma: any DMAAllocator { memory }
    public let options: VhostUserFrontendOptions
    /// Device feature bits the driver is offered: the backend's (transport bits 26 and 30 removed),
    /// for net with the emulated config and control-queue bits.
    public let offered: FeatureSet
    /// What the backend itself offered (bits 26 and 30 removed).
    public let backendOffered: FeatureSet
    /// The backend's whole GET_FEATURES answer.
    public let offeredRaw: UInt64
    public let protocolOffered: FeatureSet
    public let protocolNegotiated: FeatureSet
    /// Virtqueues the driver sees (GET_QUEUE_NUM with MQ, else one; net: 2 per pair and the control queue).
    public let queueCount: Int
    /// Rings that live at the backend (net: 2 per pair; the control queue is served here).
    public let backendRings: Int
    /// The net device's emulated config and control queue (nil for other classes).
    let net: NetEmulation?
    /// The backend's GET_QUEUE_NUM answer, as it came (nil without MQ).
    public let queueNumReply: UInt64?
    let kicks: EventFDSet
    /// Call eventfds for queues without an interrupt vector (poll mode): written by the backend, never waited on.
    let quietCalls: EventFDSet
    private var interrupts: EventFDSet?
    private var status: DeviceStatus = []
    private var driverFeatures: FeatureSet = []
    var negotiatedFeatures: FeatureSet { driverFeatures }
    private var config: [UInt8]
    private var generation: UInt8 = 0
    private var vectors: [Int: UInt16] = [:]
    var started: Set<Int> = []
    /// GET_VRING_BASE answers at the last stop, per queue (what the device had consumed).
    public private(set) var stoppedAt: [Int: UInt32] = [:]

    public init(_ options: VhostUserFrontendOptions) throws(VirtioError) {
        self.options = options
        name = "vhost-user:\(options.path)"
        deviceType = options.deviceType
        func peerError(_ e: VhostUserError) -> VirtioError { .transport(TransportError("vhost-user:\(options.path)", .peer(TransportCause(e)))) }
        do throws(VhostUserError) {
            let channel = try VhostUserChannel.connect(path: options.path, timeoutMilliseconds: options.timeoutMilliseconds)
            session = FrontendSession(channel: channel, timeoutMilliseconds: options.timeoutMilliseconds)
            // Step 1: features; the protocol-features bit and VERSION_1 are required (libvhost-user panics without VERSION_1).
            let raw = try session.getU64(.getFeatures)
            offeredRaw = raw
            guard raw & (1 << UInt64(VhostUserWire.protocolFeaturesBit)) != 0 else {
                throw VhostUserError.refused("\(channel.peer): the backend does not offer VHOST_USER_F_PROTOCOL_FEATURES (bit 30)")
            }
            var device = FeatureSet(rawValue: raw)
            device.remove(VhostUserWire.protocolFeaturesBit)
            device.remove(VhostUserWire.logAllBit)
            backendOffered = device
            // Step 2: protocol features; only what this frontend implements (never STATUS, INFLIGHT, mem slots).
            let proto = try session.getU64(.getProtocolFeatures)
            protocolOffered = FeatureSet(rawValue: proto)
            var want: FeatureSet = [VhostUserProtocolFeature.mq, VhostUserProtocolFeature.replyAck]
            if options.deviceType != .net { want.insert(VhostUserProtocolFeature.config) }  // DPDK's net hangs up on GET_CONFIG
            protocolNegotiated = protocolOffered.intersection(want)
            // Sent bare: before REPLY_ACK is agreed, an ack is not promised (rust-vmm/vhost#45).
            try session.set(.setProtocolFeatures, payload: VhostUserU64.encode(protocolNegotiated.rawValue), ack: false)
            session.replyAck = protocolNegotiated.contains(VhostUserProtocolFeature.replyAck)
            var rings = 1
            if protocolNegotiated.contains(VhostUserProtocolFeature.mq) {
                let n = try session.getU64(.getQueueNum)
                queueNumReply = n
                // Vring messages carry an 8-bit index: 256 rings at most (DPDK answers 128 pairs).
                guard n >= 1, n <= 256 else { throw VhostUserError.protocolError("\(channel.peer): GET_QUEUE_NUM answered \(n) (1 to 256 expected)") }
                rings = Int(n)
            } else {
                queueNumReply = nil
            }
            if options.deviceType == .net {
                // Net backends count GET_QUEUE_NUM in queue pairs (DPDK: always 128), and MQ needs the feature bit too.
                let available = device.contains(NetFeature.mq) && queueNumReply != nil ? min(rings, 128) : 1
                guard options.netPairs <= available else {
                    throw VhostUserError.refused("\(channel.peer): \(options.netPairs) queue pairs asked; the backend serves \(available)\(queueNumReply == nil ? " (no MQ)" : "")")
                }
                let emulation = NetEmulation(pairs: max(1, options.netPairs), mac: options.mac)
                net = emulation
                backendRings = 2 * emulation.pairs
                queueCount = backendRings + 1
                offered = emulation.offered(backend: device)
            } else {
                net = nil
                backendRings = rings
                queueCount = rings
                offered = device
            }
            try session.set(.setOwner)
            if let net { config = net.configBytes } else {
                config = try Self.fetchConfig(session, type: options.deviceType, negotiated: protocolNegotiated)
            }
            do {
                memory = try SharedDMAMemory(size: options.dmaBytes, deviceBase: options.guestBase)
                kicks = try EventFDSet(count: backendRings)
                quietCalls = try EventFDSet(count: backendRings)
            } catch { throw VhostUserError.io("\(channel.peer): \(error)") }
            // The memory table precedes every SET_VRING_ADDR; one region, the whole arena.
            let region = VhostMemoryRegion(guestAddress: memory.deviceBase, size: UInt64(memory.size),
                                           userAddress: UInt64(UInt(bitPattern: memory.base)), mmapOffset: 0)
            try session.set(.setMemTable, payload: VhostMemoryTable(regions: [region]).encoded, fds: [memory.fd])
        } catch { throw peerError(error) }
    }

    deinit {
        stopRings()
        session.close()
    }

    /// The device config: GET_CONFIG where CONFIG is negotiated (60 bytes for blk, the most
    /// qemu-storage-daemon 7.2 answers), none otherwise.
    static func fetchConfig(_ s: FrontendSession, type: VirtioDeviceType, negotiated: FeatureSet) throws(VhostUserError) -> [UInt8] {
        guard negotiated.contains(VhostUserProtocolFeature.config) else { return [] }
        let size = type == .block ? BlockConfigField.vhostUserLength : 0
        guard size > 0 else { return [] }
        let reply = try s.get(.getConfig, payload: VhostConfigPayload(offset: 0, data: [UInt8](repeating: 0, count: size)).encoded)
        if reply.isEmpty || reply.count == 12 { throw VhostUserError.refused("\(s.channel.peer): the backend answered GET_CONFIG of \(size) bytes with an empty reply (it failed)") }
        let c = try s.decode { () throws(VhostUserDecodeError) in try VhostConfigPayload(decoding: reply, "GET_CONFIG reply") }
        guard c.offset == 0, c.data.count == size else {
            throw VhostUserError.protocolError("\(s.channel.peer): GET_CONFIG for \(size) bytes at 0 came back as \(c.data.count) bytes at \(c.offset)")
        }
        return c.data
    }

    // MARK: VirtioTransport

    /// Bits with no vhost-user meaning here: per-queue reset, admin queues, notification data and
    /// IOMMU translation (it needs the backend-request channel), SR-IOV.
    public var unsupportedFeatures: FeatureSet {
        [VirtioFeature.ringReset, VirtioFeature.adminVQ, VirtioFeature.notificationData, VirtioFeature.notifConfigData,
         VirtioFeature.accessPlatform, VirtioFeature.srIOV]
    }
    public var notifyFailure: String? { kickFailure.withLock { $0 } }
    let kickFailure = Mutex<String?>(nil)
    public var deviceConfigLength: Int { config.count }

    func peer(_ e: VhostUserError) -> VirtioError { .transport(TransportError(name, .peer(TransportCause(e)))) }

    /// The status kept here; all ones once the backend has gone (as a removed PCI function reads),
    /// so a driver polling for a completion that will never come notices within its health-check period.
    public func readStatus() throws(VirtioError) -> DeviceStatus {
        session.peerGone ? DeviceStatus(rawValue: 0xFF) : status
    }

    public func writeStatus(_ new: DeviceStatus) throws(VirtioError) {
        if new.isEmpty {
            stopRings()
            status = []
            driverFeatures = []
            if let net {
                net.reset()
                replaceConfig(net.configBytes)
            }
            return
        }
        var next = new
        if new.contains(.featuresOK), !status.contains(.featuresOK) {
            // SET_FEATURES precedes every per-ring message (DPDK picks split or packed from it).
            let toBackend = net?.toBackend(driver: driverFeatures, backend: backendOffered) ?? driverFeatures
            let bits = toBackend.rawValue | 1 << UInt64(VhostUserWire.protocolFeaturesBit)
            do { try session.set(.setFeatures, payload: VhostUserU64.encode(bits)) } catch {
                if case .refused = error { next.remove(.featuresOK) } else { throw peer(error) }
            }
        }
        status = next
    }

    public func readDeviceFeatures() throws(VirtioError) -> FeatureSet { offered }
    public func writeDriverFeatures(_ features: FeatureSet) throws(VirtioError) { driverFeatures = features }
    public func numQueues() throws(VirtioError) -> Int { queueCount }
    public func queueMaxSize(_ queue: Int) throws(VirtioError) -> Int { queue >= 0 && queue < queueCount ? options.maxQueueSize : 0 }

    /// The frontend's own address for a device address inside the shared region (ring addresses travel as user addresses).
    func userAddress(_ device: UInt64, length: Int) -> UInt64? {
        guard device >= memory.deviceBase, length >= 0, device - memory.deviceBase <= UInt64(memory.size),
              UInt64(length) <= UInt64(memory.size) - (device - memory.deviceBase) else { return nil }
        return UInt64(UInt(bitPattern: memory.base)) + (device - memory.deviceBase)
    }

    public func setUpQueue(_ queue: Int, size: Int, addresses: QueueAddresses, vector: UInt16?,
                           features: FeatureSet) throws(VirtioError) -> QueueSetup {
        guard queue >= 0, queue < queueCount else { throw .noSuchQueue(queue: queue, available: queueCount) }
        if queue == controlQueueIndex { return try setUpControlQueue(size: size, addresses: addresses, vector: vector, features: features) }
        let packed = features.contains(VirtioFeature.ringPacked)
        let areas: RingAreas
        do { areas = try RingAreas(packed: packed, queueSize: size) } catch {
            throw .invalidQueueSize(queue: queue, size: size, maximum: options.maxQueueSize, packed: packed)
        }
        guard let desc = userAddress(addresses.descriptors, length: areas.descriptorBytes),
              let avail = userAddress(addresses.driver, length: areas.driverBytes),
              let used = userAddress(addresses.device, length: areas.deviceBytes) else {
            throw .transport(TransportError(name, .peer(TransportCause(VhostUserError.io("queue \(queue) ring lies outside the shared memory region")))))
        }
        let index = UInt32(queue)
        do throws(VhostUserError) {
            try session.set(.setVringNum, payload: VringState(index: index, num: UInt32(size)).encoded)
            // A fresh ring: split starts at avail index 0; packed at index 0 with the wrap counter set.
            try session.set(.setVringBase, payload: VringState(index: index, num: packed ? 0x8000 : 0).encoded)
            try session.set(.setVringAddr, payload: VringAddress(index: index, descriptors: desc, used: used, avail: avail).encoded)
        } catch { throw peer(error) }
        vectors[queue] = vector
        guard let kick = kicks[queue] else { throw peer(.io("queue \(queue): no kick eventfd (the transport is closed)")) }
        return QueueSetup(notify: NotifyTarget(pointer: nil, location: UInt64(UInt32(bitPattern: kick)), value16: UInt16(queue),
                                               withData: false),
                          vector: vector)
    }

    public func enableQueue(_ queue: Int) throws(VirtioError) {
        if queue == controlQueueIndex { return }
        guard queue >= 0, queue < queueCount, let kick = kicks[queue] else { throw .noSuchQueue(queue: queue, available: queueCount) }
        let call = vectors[queue].flatMap { v in interrupts?[Int(v)] } ?? quietCalls[queue]
        guard let call else { throw peer(.io("queue \(queue): no call eventfd (the transport is closed)")) }
        let index = UInt8(truncatingIfNeeded: queue)
        do throws(VhostUserError) {
            try session.set(.setVringKick, payload: VringFile(index: index, noFD: false).encoded, fds: [kick])
            try session.set(.setVringCall, payload: VringFile(index: index, noFD: false).encoded, fds: [call])
            // Net: pairs past the first wait for VQ_PAIRS_SET (only pair 0 has to be ready, vhost-user.md §7).
            if queue < 2 * (net?.activePairs ?? Int.max / 2) {
                try session.set(.setVringEnable, payload: VringState(index: UInt32(queue), num: 1).encoded)
            }
        } catch { throw peer(error) }
        started.insert(queue)
    }

    /// Stops every started ring: ENABLE 0, then GET_VRING_BASE (the stop message; it must come
    /// after the driver drained, as qemu-storage-daemon does not wait for requests in flight).
    func stopRings() {
        for q in started.sorted() {
            do throws(VhostUserError) {
                try session.set(.setVringEnable, payload: VringState(index: UInt32(q), num: 0).encoded)
                let reply = try session.get(.getVringBase, payload: VringState(index: UInt32(q), num: 0).encoded)
                let state = try session.decode { () throws(VhostUserDecodeError) in try VringState(decoding: reply, "GET_VRING_BASE reply") }
                if state.index == UInt32(q) { stoppedAt[q] = state.num }
            } catch { break }  // the backend is gone: nothing is running there any more
        }
        started = []
        vectors = [:]
    }

    public func resetQueue(_ queue: Int) throws(VirtioError) { throw .featureNotNegotiated("VIRTIO_F_RING_RESET (vhost-user has no per-queue reset)") }

    /// The config is fetched again for each generation read: a change between two reads shows as a new generation.
    public func configGeneration() throws(VirtioError) -> UInt8 {
        guard !config.isEmpty, net == nil else { return generation }
        do {
            let now = try Self.fetchConfig(session, type: options.deviceType, negotiated: protocolNegotiated)
            if now != config {
                config = now
                generation &+= 1
            }
        } catch { throw peer(error) }
        return generation
    }

    public func readDeviceConfig(offset: Int, width: Int) throws(VirtioError) -> UInt64 {
        guard offset >= 0, width > 0, offset + width <= config.count else {
            throw .configOutOfRange(offset: offset, width: width, length: config.count)
        }
        var v: UInt64 = 0
        for i in (0..<width).reversed() { v = v << 8 | UInt64(config[offset + i]) }
        return v
    }

    public func writeDeviceConfig(offset: Int, width: Int, value: UInt64) throws(VirtioError) {
        // The net config is read-only (the MAC changes through the control queue).
        guard offset >= 0, net == nil, width > 0, offset + width <= config.count else {
            throw .configOutOfRange(offset: offset, width: width, length: config.count)
        }
        let bytes = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        do { try session.set(.setConfig, payload: VhostConfigPayload(offset: UInt32(offset), data: bytes).encoded) } catch { throw peer(error) }
        for (i, b) in bytes.enumerated() { config[offset + i] = b }
    }

    /// A kick: one eventfd write. Never blocks (the eventfd is non-blocking; its counter cannot fill).
    @inlinable
    public func notify(_ target: NotifyTarget, value: UInt32) {
        if target.location == Self.controlQueueMarker { return serveControlQueue() }
        var one: UInt64 = 1
        if write(Int32(truncatingIfNeeded: target.location), &one, 8) != 8 { recordKickFailure(errno) }
    }

    @usableFromInline
    func recordKickFailure(_ e: Int32) {
        kickFailure.withLock { if $0 == nil { $0 = "kick eventfd write failed: \(String(cString: strerror(e)))" } }
    }

    /// One call eventfd per queue, plus one for configuration changes (drivers put it at vector 0, as
    /// over MSI-X; it is never signalled: that needs the backend-request channel).
    public var interruptVectors: Int { queueCount + 1 }

    public func enableInterrupts(count: Int) throws(VirtioError) -> [Int32] {
        guard count >= 0, count <= interruptVectors else {
            throw peer(.io("\(count) interrupt channels asked; \(interruptVectors) exist (\(queueCount) queues and the configuration)"))
        }
        do { interrupts = try EventFDSet(count: count) } catch { throw peer(.io("\(error)")) }
        return interrupts?.raw ?? []
    }

    func interruptFD(_ vector: UInt16) -> Int32? { interrupts?[Int(vector)] }

    /// A config the frontend keeps changed (net: MAC_ADDR_SET): the generation moves with it.
    func replaceConfig(_ bytes: [UInt8]) {
        guard bytes != config else { return }
        config = bytes
        generation &+= 1
    }

    /// VQ_PAIRS_SET: SET_VRING_ENABLE 1 for the rings of the first `n` pairs that are set up, 0 for the rest.
    func enablePairs(_ n: Int) -> Bool {
        guard let net else { return false }
        do throws(VhostUserError) {
            for q in started.sorted() where q < 2 * net.pairs {
                try session.set(.setVringEnable, payload: VringState(index: UInt32(q), num: q < 2 * n ? 1 : 0).encoded)
            }
        } catch { return false }
        net.activePairs = n
        return true
    }

    public func disableInterrupts() {
        interrupts?.close()
        interrupts = nil
    }

    /// No config-change interrupts: they need the backend-request channel, which is not negotiated.
    public func setConfigVector(_ vector: UInt16) throws(VirtioError) -> UInt16? { nil }

    public func adminQueueRange() throws(VirtioError) -> Range<Int> { throw .featureNotNegotiated("VIRTIO_F_ADMIN_VQ (not over vhost-user)") }

    public var transportDetails: [(String, String)] {
        [("backend", name),
         ("features", "0x\(String(offeredRaw, radix: 16))"),
         ("protocol", "offered 0x\(String(protocolOffered.rawValue, radix: 16)), negotiated 0x\(String(protocolNegotiated.rawValue, radix: 16))"),
         ("queues", queueNumReply.map { "\(queueCount) (GET_QUEUE_NUM \($0))" } ?? "\(queueCount) (no MQ)"),
         ("config", net != nil ? "\(config.count) bytes emulated here (MAC, link up, max pairs); control queue served here"
                    : config.isEmpty ? "none (no CONFIG)" : "\(config.count) bytes through GET_CONFIG"),
         ("dma", "memfd, \(memory.size / 1048576) MiB at guest-physical 0x\(String(memory.deviceBase, radix: 16))")]
    }
}
