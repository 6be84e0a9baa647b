import VirtioCore
import VirtioWire

/// Where a software net device's transmitted frames go, and where its received ones come from.
public enum SoftNetBackend: String, Sendable, CaseIterable {
    /// What the driver sends comes back on its receive queue.
    case loop
    /// A sink; with `null_rate` also a source of `null_size`-byte frames.
    case null
    /// Two functions wired back to back: each one's transmit is the other's receive.
    case pair
}

/// Net-specific hostile modes (`fault=NAME`), besides the ring-level ones soft:blk has.
public enum SoftNetFault: String, Sendable, CaseIterable {
    case ctrlBadAck = "ctrl_bad_ack"
    case macSilent = "mac_silent"
    case pairsSilent = "pairs_silent"
}

/// How a software virtio-net device is built: `soft:net,backend=loop,queues=2,mrg_rxbuf=on,...`.
public struct SoftNetOptions: Sendable, Equatable {
    public var backend = SoftNetBackend.loop
    /// Queue pairs offered (max_virtqueue_pairs; MQ is offered when more than 1).
    public var queues = 1
    public var queueSize = 256
    public var mac: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    /// MTU offered (nil: VIRTIO_NET_F_MTU not offered, 1500 assumed).
    public var mtu: UInt16?
    public var status = true
    public var linkUp = true
    public var mergeable = true
    public var controlQueue = true
    /// Offer CSUM and GUEST_CSUM: the device completes NEEDS_CSUM checksums and marks received frames DATA_VALID.
    public var checksum = false
    /// SPEED_DUPLEX: Mbit/s and 0 half / 1 full.
    public var speed: UInt32?
    public var duplex: UInt8 = 1
    public var packed = true
    public var inOrder = true
    public var eventIdx = true
    public var indirect = true
    /// The null source: frame size and frames per second per receive queue (0: no source; nil: as fast as the driver takes them).
    public var nullSize = 64
    public var nullRate: Int? = 0
    public var msixVectors = 8
    public var dmaBytes = 64 << 20
    public var faults = SoftFaults()
    public var rxFault: NetRxFault?
    public var netFault: SoftNetFault?
    public init() {}

    public var ringFeatures: SoftRingFeatures {
        var b = [Int]()
        if packed { b.append(VirtioFeature.ringPacked) }
        if inOrder { b.append(VirtioFeature.inOrder) }
        if eventIdx { b.append(VirtioFeature.eventIdx) }
        if indirect { b.append(VirtioFeature.indirectDesc) }
        return SoftRingFeatures(bits: b)
    }

    /// Every fault name soft:net takes.
    public static var faultNames: [String] {
        NetRxFault.allCases.map(\.rawValue) + SoftNetFault.allCases.map(\.rawValue) + HostileUsed.allCases.map(\.rawValue)
    }

    public static let keys: [(String, String)] = [
        ("backend", "loop (transmit comes back as receive), null (sink, and source with null_rate), pair (two functions back to back)"),
        ("queues", "queue pairs (1-16; MQ is offered when more than 1)"),
        ("queue_size", "maximum queue size offered (1-32768; a power of two when packed=off)"),
        ("mac", "the MAC in the config, e.g. 52:54:00:12:34:56"),
        ("mtu", "offer VIRTIO_NET_F_MTU with this MTU (68-65535)"),
        ("status", "offer VIRTIO_NET_F_STATUS (on|off)"),
        ("link", "link state at start (up|down)"),
        ("mrg_rxbuf", "offer VIRTIO_NET_F_MRG_RXBUF (on|off)"),
        ("ctrl_vq", "offer the control queue with CTRL_RX, CTRL_MAC_ADDR, GUEST_ANNOUNCE (on|off)"),
        ("csum", "offer CSUM and GUEST_CSUM (on|off)"),
        ("speed", "offer SPEED_DUPLEX with this speed in Mbit/s"),
        ("duplex", "half|full (with speed)"),
        ("packed", "offer VIRTIO_F_RING_PACKED (on|off)"),
        ("in_order", "offer VIRTIO_F_IN_ORDER (on|off)"),
        ("event_idx", "offer VIRTIO_F_EVENT_IDX (on|off)"),
        ("indirect", "offer VIRTIO_F_INDIRECT_DESC (on|off)"),
        ("null_size", "null source frame size in bytes (42-1514)"),
        ("null_rate", "null source frames per second per queue (0: none; max: as fast as buffers come)"),
        ("msix", "MSI-X vectors (1-128)"),
        ("dma", "DMA memory offered to the driver, e.g. 64M"),
        ("fault", "hostile device mode: " + faultNames.joined(separator: ", ")),
        ("fault_after", "frames before a fault mode strikes (default 8)"),
    ]

    /// Parses `key=value` pairs; every error names the key and what is allowed.
    public init(parsing pairs: [String]) throws(SoftDeviceError) {
        self.init()
        var msixGiven = false
        for pair in pairs where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts[0].lowercased().replacingDash()
            if key == "msix" { msixGiven = true }
            guard parts.count == 2, !parts[1].isEmpty else { throw .netOption("'\(pair)' is not key=value") }
            let value = parts[1]
            func flag() throws(SoftDeviceError) -> Bool {
                switch value.lowercased() {
                case "on", "yes", "true", "1": return true
                case "off", "no", "false", "0": return false
                default: throw .netOption("\(key)=\(value): expected on or off")
                }
            }
            func int(_ range: ClosedRange<Int>) throws(SoftDeviceError) -> Int {
                guard let n = Int(value), range.contains(n) else {
                    throw .netOption("\(key)=\(value): expected a number in \(range.lowerBound)...\(range.upperBound)")
                }
                return n
            }
            switch key {
            case "backend":
                guard let b = SoftNetBackend(rawValue: value.lowercased()) else {
                    throw .netOption("backend=\(value): expected " + SoftNetBackend.allCases.map(\.rawValue).joined(separator: ", "))
                }
                backend = b
            case "queues": queues = try int(1...16)
            case "queue_size": queueSize = try int(1...32768)
            case "mac":
                let octets = value.split(whereSeparator: { $0 == ":" || $0 == "-" }).compactMap { UInt8($0, radix: 16) }
                guard octets.count == 6, octets[0] & 1 == 0, octets.contains(where: { $0 != 0 }) else {
                    throw .netOption("mac=\(value): expected a unicast address like 52:54:00:12:34:56")
                }
                mac = octets
            case "mtu": mtu = UInt16(try int(68...65535))
            case "status": status = try flag()
            case "link":
                guard ["up", "down"].contains(value.lowercased()) else { throw .netOption("link=\(value): expected up or down") }
                linkUp = value.lowercased() == "up"
            case "mrg_rxbuf": mergeable = try flag()
            case "ctrl_vq": controlQueue = try flag()
            case "csum": checksum = try flag()
            case "speed": speed = UInt32(try int(0...0x7fff_ffff))
            case "duplex":
                guard ["half", "full"].contains(value.lowercased()) else { throw .netOption("duplex=\(value): expected half or full") }
                duplex = value.lowercased() == "full" ? 1 : 0
            case "packed": packed = try flag()
            case "in_order": inOrder = try flag()
            case "event_idx": eventIdx = try flag()
            case "indirect": indirect = try flag()
            case "null_size": nullSize = try int(42...1514)
            case "null_rate":
                if value.lowercased() == "max" { nullRate = nil } else { nullRate = try int(0...100_000_000) }
            case "msix": msixVectors = try int(1...128)
            case "dma":
                guard let n = parseByteSize(value), n >= 1 << 20, n <= 1 << 34 else { throw .netOption("dma=\(value): expected 1M to 16G") }
                dmaBytes = Int(n)
            case "fault":
                let name = value.lowercased()
                if let f = NetRxFault(rawValue: name) { rxFault = f }
                else if let f = SoftNetFault(rawValue: name) { netFault = f }
                else if let h = HostileUsed(rawValue: name) { faults.hostileUsed = h }
                else { throw .netOption("fault=\(value): no such mode; modes: " + Self.faultNames.joined(separator: ", ")) }
            case "fault_after": faults.faultAfterRequests = try int(0...1_000_000)
            default:
                throw .netOption("unknown key '\(parts[0])'; soft:net understands " + Self.keys.map(\.0).joined(separator: ", "))
            }
        }
        guard packed || queueSize & (queueSize - 1) == 0 else {
            throw .netOption("queue_size=\(queueSize) must be a power of two with packed=off (split rings)")
        }
        // A vector per queue and one for config changes, unless told otherwise.
        if !msixGiven { msixVectors = max(msixVectors, min(128, 2 * queues + 2)) }
    }
}
