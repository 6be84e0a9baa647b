
/// Device part types (`device-parts.tex`): 0x100-0x105 are the spec's common parts.
public enum DevicePartType {
    public static let devFeatures: UInt16 = 0x100
    public static let drvFeatures: UInt16 = 0x101
    public static let pciCommonCfg: UInt16 = 0x102
    public static let deviceStatus: UInt16 = 0x103
    public static let vqCfg: UInt16 = 0x104
    public static let vqNotifyCfg: UInt16 = 0x105
    /// This project's part for seed 003's virtqueue "available/used state" (never merged upstream,
    /// so the spec has no part for ring positions). device-parts.tex has no vendor or experimental
    /// range: 0x000-0x1FF are common parts (its table reserves 0x106-0x2FF for future common parts),
    /// 0x200-0x5FF are each device type's own (virtio-net already holds 0x200), 0x600-0xFFFF are
    /// reserved. Every range fills upward from its start, so the number farthest from all of them
    /// is the top of the reserved range; 0xFFFF itself is what a vanished device reads as, so
    /// VQ_STATE takes 0xFFFE. It is always OPTIONAL: a device that does not know it may ignore it.
    public static let vqState: UInt16 = 0xFFFE
    /// Where VQ_STATE sat before (parts files saved by earlier builds): read as VQ_STATE, never written.
    public static let vqStateBefore: UInt16 = 0x1FF

    public static func name(_ t: UInt16) -> String {
        switch t {
        case devFeatures: "DEV_FEATURES"
        case drvFeatures: "DRV_FEATURES"
        case pciCommonCfg: "PCI_COMMON_CFG"
        case deviceStatus: "DEVICE_STATUS"
        case vqCfg: "VQ_CFG"
        case vqNotifyCfg: "VQ_NOTIFY_CFG"
        case vqState: "VQ_STATE (seed 003)"
        default: isDeviceType(t) ? "device-type part 0x\(String(t, radix: 16))" : "part 0x\(String(t, radix: 16))"
        }
    }

    /// 0x200-0x5FF: parts a device type defines (e.g. virtio-net's control-queue state). The
    /// common order rules do not place them; drivers pass them through unchanged and in place.
    public static func isDeviceType(_ t: UInt16) -> Bool { (0x200...0x5FF).contains(t) }

    /// The order parts MUST appear in for DEV_PARTS_GET and DEV_PARTS_SET; VQ_STATE comes last.
    static func rank(_ t: UInt16) -> Int {
        switch t {
        case devFeatures: 0
        case drvFeatures: 1
        case pciCommonCfg: 2
        case deviceStatus: 3
        case vqCfg: 4
        case vqNotifyCfg: 5
        case vqState, vqStateBefore: 6
        default: 7
        }
    }
}

/// One device part: a 16-byte `struct virtio_dev_part_hdr` (le16 part_type; u8 flags; u8 reserved;
/// 8-byte selector; le32 length) followed by `length` value bytes, back to back with the next.
public struct DevicePart: Sendable, Equatable, Codable {
    public var type: UInt16
    public var flags: UInt8
    /// The selector union as raw le64: `pci_common_cfg.offset` (le32) or `vq_index.index` (le16).
    public var selector: UInt64
    public var value: [UInt8]

    public static let headerSize = 16
    public static let optional: UInt8 = 1  // VIRTIO_DEV_PART_F_OPTIONAL (bit 0)

    public init(type: UInt16, flags: UInt8 = 0, selector: UInt64 = 0, value: [UInt8]) {
        self.type = type
        self.flags = flags
        self.selector = selector
        self.value = value
    }

    /// The virtqueue a per-queue part names.
    public var queueIndex: Int { Int(selector & 0xFFFF) }

    public var header: [UInt8] {
        var w = LEWriter()
        w.u16(type)
        w.u8(flags)
        w.u8(0)
        w.u64(selector)
        w.u32(UInt32(value.count))
        return w.out
    }

    public var encoded: [UInt8] { header + value }

    public static func encode(_ parts: [DevicePart]) -> [UInt8] { parts.flatMap(\.encoded) }

    /// Parses parts back to back; a header or value running past the end is an error naming where.
    /// Trailing zero padding (under 8 bytes) is allowed.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> [DevicePart] {
        var out: [DevicePart] = []
        var at = 0
        let r = LEReader(bytes)
        while at < bytes.count {
            // Up to 7 zero bytes at the end are the padding of an 8-byte-multiple command part.
            if bytes.count - at < 8, bytes[at...].allSatisfy({ $0 == 0 }) { break }
            guard at + headerSize <= bytes.count else {
                throw .malformed("device parts: a \(bytes.count - at)-byte fragment at offset \(at) is shorter than a 16-byte part header")
            }
            let len = Int(r.u32(at + 12))
            guard len <= bytes.count - at - headerSize else {
                throw .malformed("device parts: \(DevicePartType.name(r.u16(at))) at offset \(at) claims \(len) value bytes, only \(bytes.count - at - headerSize) follow")
            }
            out.append(DevicePart(type: r.u16(at), flags: r.u8(at + 2), selector: r.u64(at + 4),
                                  value: Array(bytes[(at + headerSize)..<(at + headerSize + len)])))
            at += headerSize + len
        }
        return out
    }

    /// Checks the order rule of `device-parts.tex` (each part type preceded by all the earlier
    /// types: features, common config, status, every VQ_CFG, every VQ_NOTIFY_CFG; VQ_STATE last).
    /// Device-type parts (0x200-0x5FF) may stand anywhere: the rules rank only the common parts.
    public static func orderViolation(_ parts: [DevicePart]) -> String? {
        let ranked = parts.filter { !DevicePartType.isDeviceType($0.type) }
        for (a, b) in zip(ranked, ranked.dropFirst()) where DevicePartType.rank(b.type) < DevicePartType.rank(a.type) {
            return "\(DevicePartType.name(b.type)) comes after \(DevicePartType.name(a.type))"
        }
        return nil
    }
}

/// `struct virtio_dev_part_vq_cfg` (32 bytes).
public struct VQConfigPart: Sendable, Equatable, Codable {
    public var size: UInt16
    public var vector: UInt16
    public var enabled: Bool
    public var descriptors: UInt64
    public var driver: UInt64
    public var device: UInt64
    public init(size: UInt16, vector: UInt16, enabled: Bool, descriptors: UInt64, driver: UInt64, device: UInt64) {
        self.size = size
        self.vector = vector
        self.enabled = enabled
        self.descriptors = descriptors
        self.driver = driver
        self.device = device
    }
    public static let size = 32
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u16(size)
        w.u16(vector)
        w.u16(enabled ? 1 : 0)
        w.u16(0)
        w.u64(descriptors)
        w.u64(driver)
        w.u64(device)
        return w.out
    }
    public init(decoding b: [UInt8]) {
        let r = LEReader(b)
        self.init(size: r.u16(0), vector: r.u16(2), enabled: r.u16(4) != 0, descriptors: r.u64(8),
                  driver: r.u64(16), device: r.u64(24))
    }
}

/// `struct virtio_dev_part_vq_notify_data` (8 bytes).
public struct VQNotifyPart: Sendable, Equatable, Codable {
    public var notifyOff: UInt16
    public var notifConfigData: UInt16
    public init(notifyOff: UInt16, notifConfigData: UInt16) {
        self.notifyOff = notifyOff
        self.notifConfigData = notifConfigData
    }
    public static let size = 8
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u16(notifyOff)
        w.u16(notifConfigData)
        w.zeros(4)
        return w.out
    }
    public init(decoding b: [UInt8]) {
        let r = LEReader(b)
        self.init(notifyOff: r.u16(0), notifConfigData: r.u16(2))
    }
}

/// The VQ_STATE value: seed 003's `le16 available state; le16 used state` (packed: idx:15 | wrap<<15), padded to 8.
public struct VQStatePart: Sendable, Equatable, Codable {
    public var availState: UInt16
    public var usedState: UInt16
    public init(availState: UInt16, usedState: UInt16) {
        self.availState = availState
        self.usedState = usedState
    }
    public static let size = 8
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u16(availState)
        w.u16(usedState)
        w.zeros(4)
        return w.out
    }
    public init(decoding b: [UInt8]) {
        let r = LEReader(b)
        self.init(availState: r.u16(0), usedState: r.u16(2))
    }
}

/// A member device's state as the parts describe it: what DEV_PARTS_GET returns and DEV_PARTS_SET takes.
public struct MemberState: Sendable, Equatable, Codable {
    public struct Queue: Sendable, Equatable, Codable {
        public var index: Int
        public var config: VQConfigPart
        public var notify: VQNotifyPart
        public var state: VQStatePart?
        public init(index: Int, config: VQConfigPart, notify: VQNotifyPart, state: VQStatePart?) {
            self.index = index
            self.config = config
            self.notify = notify
            self.state = state
        }
    }
    public var deviceFeatures: UInt64
    public var driverFeatures: UInt64
    public var configMSIXVector: UInt16
    public var status: UInt8
    public var queues: [Queue]
    /// Parts of the device type (0x200-0x5FF), kept as they came: this layer does not read them.
    public var deviceTypeParts: [DevicePart]

    public init(deviceFeatures: UInt64, driverFeatures: UInt64, configMSIXVector: UInt16, status: UInt8, queues: [Queue],
                deviceTypeParts: [DevicePart] = []) {
        self.deviceFeatures = deviceFeatures
        self.driverFeatures = driverFeatures
        self.configMSIXVector = configMSIXVector
        self.status = status
        self.queues = queues
        self.deviceTypeParts = deviceTypeParts
    }

    static func features(_ v: UInt64) -> [UInt8] {
        var w = LEWriter()
        w.u64(v)
        return w.out
    }

    /// In the order `device-parts.tex` requires.
    public var parts: [DevicePart] {
        var out = [
            DevicePart(type: DevicePartType.devFeatures, flags: DevicePart.optional, value: Self.features(deviceFeatures)),
            DevicePart(type: DevicePartType.drvFeatures, value: Self.features(driverFeatures)),
            // config_msix_vector, selected by its common-config offset.
            DevicePart(type: DevicePartType.pciCommonCfg, selector: 0x10,
                       value: [UInt8(truncatingIfNeeded: configMSIXVector), UInt8(configMSIXVector >> 8)]),
            DevicePart(type: DevicePartType.deviceStatus, value: [status]),
        ]
        for q in queues {
            out.append(DevicePart(type: DevicePartType.vqCfg, selector: UInt64(q.index), value: q.config.encoded))
        }
        for q in queues {
            out.append(DevicePart(type: DevicePartType.vqNotifyCfg, selector: UInt64(q.index), value: q.notify.encoded))
        }
        for q in queues {
            if let s = q.state {
                out.append(DevicePart(type: DevicePartType.vqState, flags: DevicePart.optional, selector: UInt64(q.index),
                                      value: s.encoded))
            }
        }
        return out + deviceTypeParts
    }

    /// From parts, checking order, lengths and duplicates; unknown OPTIONAL parts are skipped.
    public init(parts: [DevicePart]) throws(WireError) {
        if let why = DevicePart.orderViolation(parts) { throw .malformed("device parts out of order: \(why)") }
        var devF: UInt64?, drvF: UInt64?, vector: UInt16 = 0xFFFF, status: UInt8?
        var queues: [Int: Queue] = [:]
        var deviceTypeParts: [DevicePart] = []
        func need(_ p: DevicePart, _ n: Int) throws(WireError) {
            guard p.value.count == n else {
                throw .malformed("\(DevicePartType.name(p.type)) has \(p.value.count) value bytes, expected \(n)")
            }
        }
        for var p in parts {
            if p.type == DevicePartType.vqStateBefore { p.type = DevicePartType.vqState }
            if DevicePartType.isDeviceType(p.type) {
                deviceTypeParts.append(p)
                continue
            }
            let r = LEReader(p.value)
            switch p.type {
            case DevicePartType.devFeatures:
                guard p.value.count % 8 == 0, !p.value.isEmpty else { throw .malformed("DEV_FEATURES length \(p.value.count) is not a multiple of 8") }
                devF = r.u64(0)
            case DevicePartType.drvFeatures:
                guard p.value.count % 8 == 0, !p.value.isEmpty else { throw .malformed("DRV_FEATURES length \(p.value.count) is not a multiple of 8") }
                drvF = r.u64(0)
            case DevicePartType.pciCommonCfg:
                if p.selector & 0xFFFF_FFFF == 0x10 {
                    try need(p, 2)
                    vector = r.u16(0)
                }
            case DevicePartType.deviceStatus:
                try need(p, 1)
                status = p.value[0]
            case DevicePartType.vqCfg:
                try need(p, VQConfigPart.size)
                guard queues[p.queueIndex] == nil else { throw .malformed("VQ_CFG for queue \(p.queueIndex) twice") }
                queues[p.queueIndex] = Queue(index: p.queueIndex, config: VQConfigPart(decoding: p.value),
                                             notify: VQNotifyPart(notifyOff: 0, notifConfigData: 0), state: nil)
            case DevicePartType.vqNotifyCfg:
                try need(p, VQNotifyPart.size)
                guard queues[p.queueIndex] != nil else { throw .malformed("VQ_NOTIFY_CFG for queue \(p.queueIndex) before its VQ_CFG") }
                queues[p.queueIndex]!.notify = VQNotifyPart(decoding: p.value)
            case DevicePartType.vqState:
                try need(p, VQStatePart.size)
                guard queues[p.queueIndex] != nil else { throw .malformed("VQ_STATE for queue \(p.queueIndex) before its VQ_CFG") }
                queues[p.queueIndex]!.state = VQStatePart(decoding: p.value)
            default:
                guard p.flags & DevicePart.optional != 0 else {
                    throw .malformed("unknown mandatory device part 0x\(String(p.type, radix: 16))")
                }
            }
        }
        guard let drvF else { throw .malformed("device parts lack DRV_FEATURES") }
        guard let status else { throw .malformed("device parts lack DEVICE_STATUS") }
        self.init(deviceFeatures: devF ?? 0, driverFeatures: drvF, configMSIXVector: vector, status: status,
                  queues: queues.values.sorted { $0.index < $1.index }, deviceTypeParts: deviceTypeParts)
    }
}
