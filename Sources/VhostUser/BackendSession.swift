import HostIO
import SystemPackage
import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// A software device a vhost-user backend can host: its offer, its config, and its queues driven
/// directly (vhost-user has no registers).
public protocol VhostUserHostedDevice: AnyObject {
    var hostedFeatures: FeatureSet { get }
    var hostedQueueCount: Int { get }
    var hostedMaxQueueSize: Int { get }
    /// GET_QUEUE_NUM's answer, in the device type's unit (virtqueues for blk, queue pairs for net).
    var hostedQueueNumber: Int { get }
    var hostedConfig: [UInt8] { get }
    /// The frontend's memory: guest-physical `address` is at `pointer`, for `length` bytes, mapped for as
    /// long as `owner` lives (the device keeps it while it may still touch the memory). Nil or why not.
    func adoptDMA(pointer: UnsafeMutableRawPointer, length: Int, address: UInt64, owner: AnyObject?) -> String?
    func dropDMA() -> String?
    func hostAccept(features: FeatureSet) -> String?
    func hostStartQueue(_ queue: Int, size: Int, addresses: QueueAddresses, resume: RingPosition?, call: Int32?) -> String?
    func hostStopQueue(_ queue: Int) -> RingPosition?
    func hostSetCall(_ queue: Int, fd: Int32?)
    func hostKick(_ queue: Int)
    func resetDevice()
}

/// One ring as the frontend has described it so far.
struct BackendRing {
    var size: Int?
    /// SET_VRING_BASE's value (split: next avail index; packed: avail and, in the high half, used).
    var base: UInt32 = 0
    /// Ring areas in guest-physical addresses (translated from the frontend's user addresses).
    var addresses: QueueAddresses?
    var kick: FileDescriptor?
    var kickSeen = false
    var call: FileDescriptor?
    var error: FileDescriptor?
    var enabled = false
    var running = false
    /// Where the device stood when the ring was last paused (ENABLE 0), to resume from.
    var paused: RingPosition?
}

/// What one message did: the reply to send (if any), and whether the connection must end.
struct BackendOutcome {
    var reply: VhostUserMessage?
    var refusal: String?
    var endConnection = false
}

/// The backend's side of one connection: validates each message against the protocol and the
/// state so far (the frontend is untrusted) and drives the hosted device.
final class BackendSession<D: VhostUserHostedDevice> {
    let device: D
    let peer: String
    var protocolFeatures: FeatureSet = []
    var features: FeatureSet?
    var memory: BackendMemory?
    /// Any change to a ring (started, stopped, a new kick) tells the serve loop to rebuild its poll set.
    var rings: [BackendRing] { didSet { pollSetChanged = true } }
    var pollSetChanged = true
    /// The protocol features this backend offers: multiqueue, acks, config space.
    static var offeredProtocol: FeatureSet { [VhostUserProtocolFeature.mq, VhostUserProtocolFeature.replyAck, VhostUserProtocolFeature.config] }

    init(device: D, peer: String) {
        self.device = device
        self.peer = peer
        rings = Array(repeating: BackendRing(), count: device.hostedQueueCount)
    }

    /// Ends the connection's state: rings stopped, the device reset, memory unmapped, fds closed.
    func tearDown() {
        for q in rings.indices where rings[q].running { _ = device.hostStopQueue(q) }
        device.resetDevice()
        for q in rings.indices { closeRing(q, kick: true, call: true) }
        _ = device.dropDMA()
        memory = nil
        rings = Array(repeating: BackendRing(), count: rings.count)
        features = nil
    }

    private func closeRing(_ q: Int, kick: Bool, call: Bool) {
        if kick { try? rings[q].kick?.close(); rings[q].kick = nil; rings[q].kickSeen = false }
        if call {
            device.hostSetCall(q, fd: nil)
            try? rings[q].call?.close(); rings[q].call = nil
            try? rings[q].error?.close(); rings[q].error = nil
        }
    }

    var kickFDs: [(queue: Int, fd: Int32)] {
        rings.indices.compactMap { q in rings[q].running ? rings[q].kick.map { (q, $0.rawValue) } : nil }
    }

    /// Handles one request. Descriptors on it are taken (kept or closed) here.
    func handle(_ m: VhostUserMessage) -> BackendOutcome {
        var fds = m.fds
        defer { closeAll(fds) }  // whatever was not taken
        guard m.versionOK, !m.isReply else {
            return BackendOutcome(refusal: "\(m.name) has flags 0x\(String(m.flags, radix: 16)) (version 1, not a reply, expected)", endConnection: true)
        }
        guard let kind = m.kind else { return refuse(m, "unknown request \(m.request)") }
        if let expected = kind.descriptorCount, fds.count != expected {
            return refuse(m, "\(kind.specName) carries \(fds.count) file descriptor(s); it takes \(expected)")
        }
        do throws(VhostUserDecodeError) {
            switch kind {
            case .getFeatures:
                return answer(m, VhostUserU64.encode(device.hostedFeatures.rawValue | 1 << UInt64(VhostUserWire.protocolFeaturesBit)))
            case .getProtocolFeatures: return answer(m, VhostUserU64.encode(Self.offeredProtocol.rawValue))
            case .getQueueNum: return answer(m, VhostUserU64.encode(UInt64(device.hostedQueueNumber)))
            case .setOwner, .resetOwner:
                try expectSize(m.payload, 0, kind.specName)
                if kind == .resetOwner { tearDown() }
                return ack(m)
            case .setProtocolFeatures:
                let want = FeatureSet(rawValue: try VhostUserU64.decode(m.payload, kind.specName))
                guard want.subtracting(Self.offeredProtocol).isEmpty else {
                    return refuse(m, "SET_PROTOCOL_FEATURES 0x\(String(want.rawValue, radix: 16)) asks for bits not offered (0x\(String(Self.offeredProtocol.rawValue, radix: 16)))")
                }
                protocolFeatures = want
                return ack(m)
            case .setFeatures:
                var bits = FeatureSet(rawValue: try VhostUserU64.decode(m.payload, kind.specName))
                bits.remove(VhostUserWire.protocolFeaturesBit)
                if let why = device.hostAccept(features: bits) { return refuse(m, "SET_FEATURES: \(why)") }
                features = bits
                return ack(m)
            case .setMemTable:
                let table = try VhostMemoryTable(decoding: m.payload)
                if let memory, memory.regions == table.regions, fds.count == table.regions.count { return ack(m) }  // the same table again
                guard !rings.contains(where: \.running) else { return refuse(m, "SET_MEM_TABLE changes the memory while rings run (stop them with GET_VRING_BASE first)") }
                let mapped = try BackendMemory(table: table, fds: fds)
                if let why = device.adoptDMA(pointer: mapped.base, length: mapped.span, address: mapped.guestBase, owner: mapped) {
                    return refuse(m, "SET_MEM_TABLE: \(why)")
                }
                memory = mapped  // the old mapping goes after the device let go of it
                return ack(m)
            case .setVringNum, .setVringBase, .setVringEnable:
                let s = try VringState(decoding: m.payload, kind.specName)
                let q = try ringIndex(s.index, kind)
                return try ringState(m, kind, q, s.num)
            case .setVringAddr:
                let a = try VringAddress(decoding: m.payload)
                let q = try ringIndex(a.index, kind)
                return try ringAddress(m, q, a)
            case .getVringBase:
                let s = try VringState(decoding: m.payload, kind.specName)
                let q = try ringIndex(s.index, kind)
                return answer(m, VringState(index: s.index, num: stopRing(q)).encoded)
            case .setVringKick, .setVringCall, .setVringErr:
                let f = try VringFile(decoding: m.payload, kind.specName)
                let q = try ringIndex(UInt32(f.index), kind)
                guard f.noFD ? fds.isEmpty : fds.count == 1 else {
                    return refuse(m, "\(kind.specName) for ring \(q) \(f.noFD ? "says NOFD but carries" : "carries") \(fds.count) file descriptor(s)")
                }
                if let raw = fds.first, let why = usableEventFD(raw) {
                    return refuse(m, "\(kind.specName) for ring \(q): \(why)")
                }
                let fd = fds.first.map { FileDescriptor(rawValue: $0) }
                fds = []
                return ringFile(m, kind, q, fd)
            case .getConfig:
                let c = try VhostConfigPayload(decoding: m.payload, kind.specName)
                let config = device.hostedConfig
                let end = Int(c.offset) + c.data.count
                // Out of range: a zero-size reply, which frontends read as failure (libvhost-user does the same).
                guard protocolFeatures.contains(VhostUserProtocolFeature.config), end <= config.count else {
                    return answer(m, [])
                }
                return answer(m, VhostConfigPayload(offset: c.offset, flags: c.flags, data: Array(config[Int(c.offset)..<end])).encoded)
            case .setConfig:
                let c = try VhostConfigPayload(decoding: m.payload, kind.specName)
                guard protocolFeatures.contains(VhostUserProtocolFeature.config), Int(c.offset) + c.data.count <= device.hostedConfig.count else {
                    return refuse(m, "SET_CONFIG of \(c.data.count) bytes at \(c.offset) is outside the \(device.hostedConfig.count)-byte config")
                }
                return ack(m)  // every field of this device's config is read-only (no CONFIG_WCE): the write is dropped
            default:
                return refuse(m, "\(kind.specName) is not supported by this backend")
            }
        } catch {
            return refuse(m, error.why)
        }
    }

    private func ringIndex(_ index: UInt32, _ kind: VhostUserRequest) throws(VhostUserDecodeError) -> Int {
        guard index < UInt32(rings.count) else {
            throw VhostUserDecodeError("\(kind.specName) for ring \(index), past the \(rings.count) ring(s) this device has")
        }
        // Layout-dependent messages wait for the features (DPDK decides split or packed from them too).
        if kind != .setVringCall, kind != .setVringErr, kind != .getVringBase, kind != .setVringEnable, features == nil {
            throw VhostUserDecodeError("\(kind.specName) for ring \(index) before SET_FEATURES")
        }
        return Int(index)
    }

    private func ringState(_ m: VhostUserMessage, _ kind: VhostUserRequest, _ q: Int, _ num: UInt32) throws(VhostUserDecodeError) -> BackendOutcome {
        switch kind {
        case .setVringNum:
            let packed = features?.contains(VirtioFeature.ringPacked) ?? false
            guard num >= 1, num <= UInt32(device.hostedMaxQueueSize), packed || num & (num - 1) == 0 else {
                throw VhostUserDecodeError("SET_VRING_NUM \(num) for ring \(q): expected \(packed ? "1 to" : "a power of two up to") \(device.hostedMaxQueueSize)")
            }
            guard !rings[q].running else { throw VhostUserDecodeError("SET_VRING_NUM for ring \(q) while it runs") }
            rings[q].size = Int(num)
        case .setVringBase:
            guard !rings[q].running else { throw VhostUserDecodeError("SET_VRING_BASE for ring \(q) while it runs") }
            rings[q].base = num
            rings[q].paused = nil
        default:  // enable
            guard num <= 1 else { throw VhostUserDecodeError("SET_VRING_ENABLE \(num) for ring \(q) (0 or 1)") }
            rings[q].enabled = num == 1
            if num == 0, rings[q].running {
                rings[q].paused = device.hostStopQueue(q)
                rings[q].running = false
            }
        }
        if let why = startIfReady(q) { return refuse(m, why) }
        return ack(m)
    }

    private func ringAddress(_ m: VhostUserMessage, _ q: Int, _ a: VringAddress) throws(VhostUserDecodeError) -> BackendOutcome {
        guard let memory else { throw VhostUserDecodeError("SET_VRING_ADDR for ring \(q) before SET_MEM_TABLE") }
        guard let size = rings[q].size else { throw VhostUserDecodeError("SET_VRING_ADDR for ring \(q) before SET_VRING_NUM") }
        guard !rings[q].running else { throw VhostUserDecodeError("SET_VRING_ADDR for ring \(q) while it runs") }
        guard a.flags & ~VringAddress.logFlag == 0 else { throw VhostUserDecodeError("SET_VRING_ADDR flags 0x\(String(a.flags, radix: 16)) for ring \(q)") }
        let packed = features?.contains(VirtioFeature.ringPacked) ?? false
        guard let areas = try? RingAreas(packed: packed, queueSize: size) else { throw VhostUserDecodeError("ring \(q): size \(size) has no layout") }
        // Each area must lie inside one region (ring addresses are frontend user addresses).
        guard let d = memory.guestAddress(user: a.descriptors, length: areas.descriptorBytes),
              let av = memory.guestAddress(user: a.avail, length: areas.driverBytes),
              let u = memory.guestAddress(user: a.used, length: areas.deviceBytes) else {
            throw VhostUserDecodeError("SET_VRING_ADDR for ring \(q): a ring area lies outside every memory region (desc 0x\(String(a.descriptors, radix: 16)), avail 0x\(String(a.avail, radix: 16)), used 0x\(String(a.used, radix: 16)))")
        }
        rings[q].addresses = QueueAddresses(descriptors: d, driver: av, device: u)
        rings[q].paused = nil
        if let why = startIfReady(q) { return refuse(m, why) }
        return ack(m)
    }

    private func ringFile(_ m: VhostUserMessage, _ kind: VhostUserRequest, _ q: Int, _ fd: FileDescriptor?) -> BackendOutcome {
        switch kind {
        case .setVringKick:
            try? rings[q].kick?.close()
            rings[q].kick = fd
            rings[q].kickSeen = true
        case .setVringCall:
            // Point the device at the new eventfd before the old one closes.
            device.hostSetCall(q, fd: fd?.rawValue)
            try? rings[q].call?.close()
            rings[q].call = fd
        default:
            try? rings[q].error?.close()
            rings[q].error = fd
        }
        if let why = startIfReady(q) { return refuse(m, why) }
        return ack(m)
    }

    /// Starts ring `q` once it has a size, addresses, a kick (an fd or NOFD) and ENABLE 1.
    private func startIfReady(_ q: Int) -> String? {
        guard !rings[q].running, rings[q].enabled, rings[q].kickSeen, let size = rings[q].size, let a = rings[q].addresses,
              let memory, let features else { return nil }
        let packed = features.contains(VirtioFeature.ringPacked)
        let base = rings[q].base
        // Packed: both 15-bit ring offsets must lie inside the ring (the device reads and writes there).
        if packed, rings[q].paused == nil, base & 0x7FFF >= UInt32(size) || (base >> 16) & 0x7FFF >= UInt32(size) {
            return "ring \(q): SET_VRING_BASE 0x\(String(base, radix: 16)) names a position past the \(size)-entry packed ring"
        }
        let resume: RingPosition
        if let paused = rings[q].paused {
            resume = paused
        } else if packed {
            // Avail in the low half; used in the high half when the frontend sent one (QEMU), else used = avail (DPDK).
            resume = RingPosition(packed: true, vhostVringBase: base >> 16 == 0 ? base & 0xFFFF | (base & 0xFFFF) << 16 : base)
        } else {
            // Split: the used index is the ring's own (vhost-user carries none).
            let usedIdx = memory.pointer(guest: a.device + 2, length: 2).map { $0.loadUnaligned(as: UInt16.self) } ?? 0
            resume = RingPosition(packed: false, vhostVringBase: base, usedIndex: UInt16(littleEndian: usedIdx))
        }
        if let why = device.hostStartQueue(q, size: size, addresses: a, resume: resume, call: rings[q].call?.rawValue) {
            return "ring \(q) cannot start: \(why)"
        }
        rings[q].running = true
        return nil
    }

    /// GET_VRING_BASE: stops ring `q` and returns where the device stands; its kick and call close.
    private func stopRing(_ q: Int) -> UInt32 {
        var at: RingPosition? = rings[q].paused
        if rings[q].running { at = device.hostStopQueue(q) }
        rings[q].running = false
        rings[q].paused = nil
        rings[q].addresses = nil
        closeRing(q, kick: true, call: true)
        guard let at else { return rings[q].base }
        // Packed: avail in the low half, used in the high half (QEMU's encoding; DPDK reads the low 16 bits).
        return at.vhostVringBase
    }

    private func answer(_ m: VhostUserMessage, _ payload: [UInt8]) -> BackendOutcome {
        BackendOutcome(reply: .reply(to: m.request, payload: payload))
    }

    private func ack(_ m: VhostUserMessage) -> BackendOutcome {
        m.needsReply && !(m.kind?.hasReply ?? false) ? answer(m, VhostUserU64.encode(0)) : BackendOutcome()
    }

    /// A request this backend will not carry out: acked with 1 when an ack was asked; a GET_* that
    /// cannot be answered ends the connection (the frontend waits for a reply of a shape it cannot get).
    private func refuse(_ m: VhostUserMessage, _ why: String) -> BackendOutcome {
        if m.kind?.hasReply ?? false { return BackendOutcome(refusal: why, endConnection: true) }
        return BackendOutcome(reply: m.needsReply ? .reply(to: m.request, payload: VhostUserU64.encode(1)) : nil, refusal: why)
    }
}
