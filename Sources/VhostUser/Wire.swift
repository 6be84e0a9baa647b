import VirtioWire

/// vhost-user requests (QEMU docs/interop/vhost-user.rst "Front-end message types"), by number.
public enum VhostUserRequest: UInt32, Sendable, CaseIterable {
    case getFeatures = 1, setFeatures, setOwner, resetOwner, setMemTable, setLogBase, setLogFD, setVringNum, setVringAddr,
         setVringBase, getVringBase, setVringKick, setVringCall, setVringErr, getProtocolFeatures, setProtocolFeatures,
         getQueueNum, setVringEnable, sendRARP, netSetMTU, setBackendReqFD, iotlbMessage, setVringEndian, getConfig,
         setConfig, createCryptoSession, closeCryptoSession, postcopyAdvise, postcopyListen, postcopyEnd, getInflightFD,
         setInflightFD, gpuSetSocket, resetDevice, vringKick, getMaxMemSlots, addMemReg, remMemReg, setStatus, getStatus

    /// The protocol's own name (VHOST_USER_<name>), for messages.
    public var specName: String { Self.names[Int(rawValue) - 1] }

    static let names = [
        "GET_FEATURES", "SET_FEATURES", "SET_OWNER", "RESET_OWNER", "SET_MEM_TABLE", "SET_LOG_BASE", "SET_LOG_FD",
        "SET_VRING_NUM", "SET_VRING_ADDR", "SET_VRING_BASE", "GET_VRING_BASE", "SET_VRING_KICK", "SET_VRING_CALL",
        "SET_VRING_ERR", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM", "SET_VRING_ENABLE",
        "SEND_RARP", "NET_SET_MTU", "SET_BACKEND_REQ_FD", "IOTLB_MSG", "SET_VRING_ENDIAN", "GET_CONFIG", "SET_CONFIG",
        "CREATE_CRYPTO_SESSION", "CLOSE_CRYPTO_SESSION", "POSTCOPY_ADVISE", "POSTCOPY_LISTEN", "POSTCOPY_END",
        "GET_INFLIGHT_FD", "SET_INFLIGHT_FD", "GPU_SET_SOCKET", "RESET_DEVICE", "VRING_KICK", "GET_MAX_MEM_SLOTS",
        "ADD_MEM_REG", "REM_MEM_REG", "SET_STATUS", "GET_STATUS",
    ]

    /// Requests answered with a payload of their own (never with a REPLY_ACK u64 instead).
    public var hasReply: Bool {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getQueueNum, .getVringBase, .getConfig, .getMaxMemSlots, .getStatus,
             .getInflightFD: true
        default: false
        }
    }

    /// How many file descriptors travel with the request (nil: depends on the payload).
    public var descriptorCount: Int? {
        switch self {
        case .setMemTable, .setVringKick, .setVringCall, .setVringErr: nil
        case .setLogBase, .setLogFD, .setBackendReqFD, .setInflightFD, .addMemReg: 1
        default: 0
        }
    }
}

/// Protocol feature bits (`VHOST_USER_PROTOCOL_F_*`).
public enum VhostUserProtocolFeature {
    public static let mq = 0, logSHMFD = 1, rarp = 2, replyAck = 3, netMTU = 4, backendReq = 5, crossEndian = 6,
                      cryptoSession = 7, pagefault = 8, config = 9, backendSendFD = 10, hostNotifier = 11,
                      inflightSHMFD = 12, resetDevice = 13, inbandNotifications = 14, configureMemSlots = 15, status = 16
}

/// Constants of the vhost-user wire.
public enum VhostUserWire {
    /// VHOST_USER_F_PROTOCOL_FEATURES: a feature bit of the transport, not of the device.
    public static let protocolFeaturesBit = 30
    /// VHOST_F_LOG_ALL (dirty-page logging for migration): a transport bit this project never takes.
    public static let logAllBit = 26
    /// Flags: version 1 in bits 0-1, REPLY (bit 2), NEED_REPLY (bit 3).
    public static let version: UInt32 = 0x1, replyFlag: UInt32 = 0x4, needReplyFlag: UInt32 = 0x8
    public static let headerLength = 12
    /// At most 8 descriptors and 8 memory regions per message (QEMU, libvhost-user and DPDK all say 8).
    public static let maxRegions = 8
    /// The largest payload this side takes: the biggest message it understands (a 256-byte config) with room.
    public static let maxPayload = 4096
    /// VHOST_USER_VRING_NOFD_MASK in a vring file payload.
    public static let noFDBit: UInt64 = 1 << 8
    /// The largest config access (`VHOST_USER_MAX_CONFIG_SIZE`).
    public static let maxConfigSize = 256
}

/// One message: the 12-byte header (`request u32 | flags u32 | size u32`) and its payload, plus
/// the descriptors that travel with it. Little-endian (the wire is host order; x86 only here).
public struct VhostUserMessage: Sendable, Equatable {
    public var request: UInt32
    public var flags: UInt32
    public var payload: [UInt8]
    public var fds: [Int32]

    public init(request: UInt32, flags: UInt32 = VhostUserWire.version, payload: [UInt8] = [], fds: [Int32] = []) {
        self.request = request
        self.flags = flags
        self.payload = payload
        self.fds = fds
    }

    public init(_ request: VhostUserRequest, needReply: Bool = false, payload: [UInt8] = [], fds: [Int32] = []) {
        self.init(request: request.rawValue, flags: VhostUserWire.version | (needReply ? VhostUserWire.needReplyFlag : 0),
                  payload: payload, fds: fds)
    }

    /// A backend's reply to `request`: flags exactly version | REPLY (both QEMU and DPDK insist on 0x5).
    public static func reply(to request: UInt32, payload: [UInt8]) -> VhostUserMessage {
        VhostUserMessage(request: request, flags: VhostUserWire.version | VhostUserWire.replyFlag, payload: payload)
    }

    public var kind: VhostUserRequest? { VhostUserRequest(rawValue: request) }
    public var name: String { kind?.specName ?? "request \(request)" }
    public var isReply: Bool { flags & VhostUserWire.replyFlag != 0 }
    public var needsReply: Bool { flags & VhostUserWire.needReplyFlag != 0 }
    public var versionOK: Bool { flags & 0x3 == VhostUserWire.version }

    /// Header and payload, as sent.
    public var bytes: [UInt8] {
        var w = LEWriter()
        w.u32(request)
        w.u32(flags)
        w.u32(UInt32(payload.count))
        w.bytes(payload)
        return w.out
    }

    /// The payload size a header announces.
    public static func payloadSize(header: [UInt8]) -> Int { Int(LEReader(header).u32(8)) }
}

/// Why a payload could not be decoded.
public struct VhostUserDecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    public let why: String
    public init(_ why: String) { self.why = why }
    public var description: String { why }
}

func expectSize(_ p: [UInt8], _ n: Int, _ what: String) throws(VhostUserDecodeError) {
    guard p.count == n else { throw VhostUserDecodeError("\(what) payload is \(p.count) bytes, expected \(n)") }
}

/// A u64 payload (features, protocol features, queue count, an ack).
public enum VhostUserU64 {
    public static func encode(_ v: UInt64) -> [UInt8] {
        var w = LEWriter()
        w.u64(v)
        return w.out
    }
    public static func decode(_ p: [UInt8], _ what: String) throws(VhostUserDecodeError) -> UInt64 {
        try expectSize(p, 8, what)
        return LEReader(p).u64(0)
    }
}

/// `struct vhost_vring_state { unsigned int index, num; }`: NUM, BASE, ENABLE and GET_VRING_BASE's reply.
public struct VringState: Sendable, Equatable {
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u32(index)
        w.u32(num)
        return w.out
    }
    public init(decoding p: [UInt8], _ what: String) throws(VhostUserDecodeError) {
        try expectSize(p, 8, what)
        let r = LEReader(p)
        self.init(index: r.u32(0), num: r.u32(4))
    }
}

/// `struct vhost_vring_addr`: the ring areas in the frontend's user addresses (packed: `avail` is the
/// driver event area, `used` the device event area).
public struct VringAddress: Sendable, Equatable {
    public var index: UInt32
    public var flags: UInt32
    public var descriptors: UInt64
    public var used: UInt64
    public var avail: UInt64
    public var log: UInt64
    public static let length = 40
    /// VHOST_VRING_F_LOG: `log` is meaningful (dirty logging, never taken here).
    public static let logFlag: UInt32 = 1
    public init(index: UInt32, flags: UInt32 = 0, descriptors: UInt64, used: UInt64, avail: UInt64, log: UInt64 = 0) {
        self.index = index
        self.flags = flags
        self.descriptors = descriptors
        self.used = used
        self.avail = avail
        self.log = log
    }
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u32(index)
        w.u32(flags)
        w.u64(descriptors)
        w.u64(used)
        w.u64(avail)
        w.u64(log)
        return w.out
    }
    public init(decoding p: [UInt8]) throws(VhostUserDecodeError) {
        try expectSize(p, Self.length, "SET_VRING_ADDR")
        let r = LEReader(p)
        self.init(index: r.u32(0), flags: r.u32(4), descriptors: r.u64(8), used: r.u64(16), avail: r.u64(24), log: r.u64(32))
    }
}

/// KICK / CALL / ERR payload: the ring index in bits 0-7, bit 8 set when no descriptor comes with it.
public struct VringFile: Sendable, Equatable {
    public var index: UInt8
    public var noFD: Bool
    public init(index: UInt8, noFD: Bool) {
        self.index = index
        self.noFD = noFD
    }
    public var encoded: [UInt8] { VhostUserU64.encode(UInt64(index) | (noFD ? VhostUserWire.noFDBit : 0)) }
    public init(decoding p: [UInt8], _ what: String) throws(VhostUserDecodeError) {
        let v = try VhostUserU64.decode(p, what)
        guard v & ~(0xFF | VhostUserWire.noFDBit) == 0 else {
            throw VhostUserDecodeError("\(what) payload 0x\(String(v, radix: 16)) has bits set above the index and NOFD flag")
        }
        self.init(index: UInt8(v & 0xFF), noFD: v & VhostUserWire.noFDBit != 0)
    }
}

/// One region of a memory table: guest-physical (descriptor) addresses, size, the frontend's
/// user address (ring addresses), and where the region starts in the descriptor's file.
public struct VhostMemoryRegion: Sendable, Equatable {
    public var guestAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
    public static let length = 32
    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestAddress = guestAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }
    func write(_ w: inout LEWriter) {
        w.u64(guestAddress)
        w.u64(size)
        w.u64(userAddress)
        w.u64(mmapOffset)
    }
    init(_ r: LEReader, at o: Int) {
        self.init(guestAddress: r.u64(o), size: r.u64(o + 8), userAddress: r.u64(o + 16), mmapOffset: r.u64(o + 24))
    }
}

/// SET_MEM_TABLE: `u32 nregions, u32 padding`, then the regions (QEMU and DPDK send only
/// `nregions` of them; older frontends send all 8).
public struct VhostMemoryTable: Sendable, Equatable {
    public var regions: [VhostMemoryRegion]
    public init(regions: [VhostMemoryRegion]) { self.regions = regions }
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u32(UInt32(regions.count))
        w.u32(0)
        for r in regions { r.write(&w) }
        return w.out
    }
    public init(decoding p: [UInt8]) throws(VhostUserDecodeError) {
        let r = LEReader(p)
        guard p.count >= 8 else { throw VhostUserDecodeError("SET_MEM_TABLE payload is \(p.count) bytes, shorter than its 8-byte count") }
        let n = Int(r.u32(0))
        guard n >= 1, n <= VhostUserWire.maxRegions else {
            throw VhostUserDecodeError("SET_MEM_TABLE has \(n) regions (1 to \(VhostUserWire.maxRegions) allowed)")
        }
        let full = 8 + VhostMemoryRegion.length * VhostUserWire.maxRegions
        guard p.count >= 8 + VhostMemoryRegion.length * n, p.count <= full else {
            throw VhostUserDecodeError("SET_MEM_TABLE payload is \(p.count) bytes for \(n) regions (\(8 + 32 * n) to \(full) expected)")
        }
        self.init(regions: (0..<n).map { VhostMemoryRegion(r, at: 8 + VhostMemoryRegion.length * $0) })
    }
}

/// GET_CONFIG / SET_CONFIG: `u32 offset, u32 size, u32 flags`, then `size` bytes of config.
public struct VhostConfigPayload: Sendable, Equatable {
    public var offset: UInt32
    public var flags: UInt32
    public var data: [UInt8]
    public init(offset: UInt32, flags: UInt32 = 0, data: [UInt8]) {
        self.offset = offset
        self.flags = flags
        self.data = data
    }
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u32(offset)
        w.u32(UInt32(data.count))
        w.u32(flags)
        w.bytes(data)
        return w.out
    }
    public init(decoding p: [UInt8], _ what: String) throws(VhostUserDecodeError) {
        guard p.count >= 12 else { throw VhostUserDecodeError("\(what) payload is \(p.count) bytes, shorter than its 12-byte header") }
        let r = LEReader(p)
        let size = Int(r.u32(4))
        guard size <= VhostUserWire.maxConfigSize else {
            throw VhostUserDecodeError("\(what) size \(size) is over the \(VhostUserWire.maxConfigSize)-byte maximum")
        }
        guard p.count == 12 + size else { throw VhostUserDecodeError("\(what) payload is \(p.count) bytes for a \(size)-byte config (expected \(12 + size))") }
        self.init(offset: r.u32(0), flags: r.u32(8), data: Array(p[12...]))
    }
}
