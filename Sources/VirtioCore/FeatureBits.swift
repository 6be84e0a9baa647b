/// Virtio device types (`content.tex` "Device Types"); the PCI device ID is 0x1040 + this.
public enum VirtioDeviceType: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case net = 1, block = 2, console = 3, entropy = 4, balloon = 5, scsi = 8, ninep = 9, gpu = 16,
         input = 18, vsock = 19, crypto = 20, fs = 26

    public var description: String {
        switch self {
        case .net: "net"
        case .block: "blk"
        case .console: "console"
        case .entropy: "rng"
        case .balloon: "balloon"
        case .scsi: "scsi"
        case .ninep: "9p"
        case .gpu: "gpu"
        case .input: "input"
        case .vsock: "vsock"
        case .crypto: "crypto"
        case .fs: "fs"
        }
    }

    /// Prefix of this type's feature names (`VIRTIO_BLK_F_`, ...), when we name its bits.
    var featurePrefix: String? {
        switch self {
        case .net: "VIRTIO_NET_F_"
        case .block: "VIRTIO_BLK_F_"
        case .balloon: "VIRTIO_BALLOON_F_"
        default: nil
        }
    }
}

/// A set of feature bits 0...63 (the two 32-bit select windows every ratified bit fits in).
public struct FeatureSet: Hashable, Sendable, ExpressibleByArrayLiteral {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(arrayLiteral bits: Int...) {
        rawValue = 0
        for b in bits { insert(b) }
    }
    public init<S: Sequence<Int>>(_ bits: S) {
        rawValue = 0
        for b in bits { insert(b) }
    }

    public func contains(_ bit: Int) -> Bool { bit >= 0 && bit < 64 && rawValue & (1 << UInt64(bit)) != 0 }
    public mutating func insert(_ bit: Int) {
        precondition(bit >= 0 && bit < 64, "feature bit \(bit) outside 0...63")
        rawValue |= 1 << UInt64(bit)
    }
    public mutating func remove(_ bit: Int) { if bit >= 0 && bit < 64 { rawValue &= ~(1 << UInt64(bit)) } }
    public func union(_ o: FeatureSet) -> FeatureSet { FeatureSet(rawValue: rawValue | o.rawValue) }
    public func intersection(_ o: FeatureSet) -> FeatureSet { FeatureSet(rawValue: rawValue & o.rawValue) }
    public func subtracting(_ o: FeatureSet) -> FeatureSet { FeatureSet(rawValue: rawValue & ~o.rawValue) }
    public func isSubset(of o: FeatureSet) -> Bool { rawValue & ~o.rawValue == 0 }
    public var isEmpty: Bool { rawValue == 0 }
    /// Bit numbers, ascending.
    public var bits: [Int] { (0..<64).filter { contains($0) } }
    /// The 32-bit word seen through feature-select window `select` (0 or 1).
    public func word(_ select: Int) -> UInt32 {
        select == 0 ? UInt32(truncatingIfNeeded: rawValue) : select == 1 ? UInt32(truncatingIfNeeded: rawValue >> 32) : 0
    }
}

/// Device-independent feature bits (`content.tex` "Reserved Feature Bits", 1.3 and 1.4 drafts).
public enum VirtioFeature {
    public static let notifyOnEmpty = 24       // legacy only
    public static let anyLayout = 27           // legacy only
    public static let indirectDesc = 28
    public static let eventIdx = 29
    public static let version1 = 32
    public static let accessPlatform = 33
    public static let ringPacked = 34
    public static let inOrder = 35
    public static let orderPlatform = 36
    public static let srIOV = 37
    public static let notificationData = 38
    public static let notifConfigData = 39
    public static let ringReset = 40
    public static let adminVQ = 41
    public static let suspend = 43             // 1.4 draft

    /// Bits a modern driver never negotiates whatever the device offers (legacy-only meanings).
    public static let legacyOnly: FeatureSet = [notifyOnEmpty, anyLayout, 30]
}

/// virtio-blk feature bits (`device-types/blk/description.tex`).
public enum BlockFeature {
    public static let sizeMax = 1, segMax = 2, geometry = 4, readOnly = 5, blockSize = 6, flush = 9,
                      topology = 10, configWCE = 11, multiQueue = 12, discard = 13, writeZeroes = 14,
                      lifetime = 15, secureErase = 16, zoned = 17
    /// Seed 000's statistics queue, never merged upstream. The seed put it on bit 11, which the
    /// ratified spec gives to CONFIG_WCE; this project puts it on bit 23 (unassigned for blk) and
    /// negotiates it only when both sides are told to (`soft:blk,stats_vq=on` and `--blk-stats-vq`).
    public static let draftStatsVQ = 23
}

/// virtio-net feature bits (`device-types/net/description.tex`).
public enum NetFeature {
    public static let csum = 0, guestCsum = 1, ctrlGuestOffloads = 2, mtu = 3, mac = 5, gso = 6, guestTSO4 = 7,
                      guestTSO6 = 8, guestECN = 9, guestUFO = 10, hostTSO4 = 11, hostTSO6 = 12, hostECN = 13, hostUFO = 14,
                      mrgRxbuf = 15, status = 16, ctrlVQ = 17, ctrlRX = 18, ctrlVLAN = 19, ctrlRXExtra = 20,
                      guestAnnounce = 21, mq = 22, ctrlMACAddr = 23, rss = 60, speedDuplex = 63
}

/// virtio-balloon feature bits (`device-types/balloon/description.tex`).
public enum BalloonFeature {
    public static let mustTellHost = 0, statsVQ = 1, deflateOnOOM = 2, freePageHint = 3, pagePoison = 4,
                      pageReporting = 5
}

/// Names for feature bits, device-independent and per device type, with a decoder and a parser.
public enum FeatureNames {
    static let common: [Int: String] = [
        24: "VIRTIO_F_NOTIFY_ON_EMPTY", 27: "VIRTIO_F_ANY_LAYOUT", 28: "VIRTIO_F_INDIRECT_DESC",
        29: "VIRTIO_F_EVENT_IDX", 32: "VIRTIO_F_VERSION_1", 33: "VIRTIO_F_ACCESS_PLATFORM",
        34: "VIRTIO_F_RING_PACKED", 35: "VIRTIO_F_IN_ORDER", 36: "VIRTIO_F_ORDER_PLATFORM",
        37: "VIRTIO_F_SR_IOV", 38: "VIRTIO_F_NOTIFICATION_DATA", 39: "VIRTIO_F_NOTIF_CONFIG_DATA",
        40: "VIRTIO_F_RING_RESET", 41: "VIRTIO_F_ADMIN_VQ", 43: "VIRTIO_F_SUSPEND",
    ]
    static let block: [Int: String] = [
        0: "BARRIER", 1: "SIZE_MAX", 2: "SEG_MAX", 4: "GEOMETRY", 5: "RO", 6: "BLK_SIZE", 7: "SCSI",
        9: "FLUSH", 10: "TOPOLOGY", 11: "CONFIG_WCE", 12: "MQ", 13: "DISCARD", 14: "WRITE_ZEROES",
        15: "LIFETIME", 16: "SECURE_ERASE", 17: "ZONED", 23: "STATS_VQ_DRAFT",
    ]
    static let net: [Int: String] = [
        0: "CSUM", 1: "GUEST_CSUM", 2: "CTRL_GUEST_OFFLOADS", 3: "MTU", 5: "MAC", 6: "GSO", 7: "GUEST_TSO4",
        8: "GUEST_TSO6", 9: "GUEST_ECN", 10: "GUEST_UFO", 11: "HOST_TSO4", 12: "HOST_TSO6", 13: "HOST_ECN",
        14: "HOST_UFO", 15: "MRG_RXBUF", 16: "STATUS", 17: "CTRL_VQ", 18: "CTRL_RX", 19: "CTRL_VLAN",
        20: "CTRL_RX_EXTRA", 21: "GUEST_ANNOUNCE", 22: "MQ", 23: "CTRL_MAC_ADDR",
        46: "GUEST_UDP_TUNNEL_GSO", 47: "GUEST_UDP_TUNNEL_GSO_CSUM", 48: "HOST_UDP_TUNNEL_GSO",
        49: "HOST_UDP_TUNNEL_GSO_CSUM", 50: "DEVICE_STATS", 51: "HASH_TUNNEL", 52: "VQ_NOTF_COAL",
        53: "NOTF_COAL", 54: "GUEST_USO4", 55: "GUEST_USO6", 56: "HOST_USO", 57: "HASH_REPORT",
        59: "GUEST_HDRLEN", 60: "RSS", 61: "RSC_EXT", 62: "STANDBY", 63: "SPEED_DUPLEX",
    ]
    static let balloon: [Int: String] = [
        0: "MUST_TELL_HOST", 1: "STATS_VQ", 2: "DEFLATE_ON_OOM", 3: "FREE_PAGE_HINT", 4: "PAGE_POISON",
        5: "PAGE_REPORTING",
    ]

    static func table(_ type: VirtioDeviceType?) -> [Int: String] {
        switch type {
        case .block: block
        case .net: net
        case .balloon: balloon
        default: [:]
        }
    }

    /// The name of `bit` for a device of `type`: `VIRTIO_F_RING_PACKED`, `VIRTIO_BLK_F_FLUSH`, or `bit 45`.
    public static func name(of bit: Int, deviceType type: VirtioDeviceType?) -> String {
        if let n = common[bit] { return n }
        if let prefix = type?.featurePrefix, let n = table(type)[bit] { return prefix + n }
        return "bit \(bit)"
    }

    /// Names of every bit in `set`, ascending by bit number.
    public static func names(_ set: FeatureSet, deviceType type: VirtioDeviceType?) -> [String] {
        set.bits.map { name(of: $0, deviceType: type) }
    }

    /// Parses `VIRTIO_F_RING_PACKED`, `RING_PACKED`, `ring_packed`, `VIRTIO_BLK_F_FLUSH`, `FLUSH` or a
    /// bit number (`34`, `bit34`); nil when nothing matches.
    public static func parse(_ text: String, deviceType type: VirtioDeviceType?) -> Int? {
        let t = String(text.uppercased().map { $0 == "-" ? "_" : $0 })
        let digits = t.hasPrefix("BIT") ? String(t.dropFirst(3).filter { $0 != " " }) : t
        if let n = Int(digits), (0..<64).contains(n) { return n }
        for (bit, name) in common where name == t || name.dropFirst("VIRTIO_F_".count) == t { return bit }
        if let prefix = type?.featurePrefix {
            for (bit, name) in table(type) where prefix + name == t || name == t { return bit }
        }
        return nil
    }

    /// Every name a user may type for `type` (for error messages).
    public static func known(deviceType type: VirtioDeviceType?) -> [String] {
        let c = common.sorted { $0.key < $1.key }.map { String($0.value.dropFirst("VIRTIO_F_".count)) }
        let d = table(type).sorted { $0.key < $1.key }.map(\.value)
        return c + d
    }
}
