import VirtioCore
import VirtioWire

/// A 48-bit Ethernet address.
public struct MACAddress: Sendable, Equatable, Hashable, CustomStringConvertible, Codable {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(_ b: [UInt8]) {
        precondition(b.count == 6, "a MAC address is 6 bytes")
        bytes = (b[0], b[1], b[2], b[3], b[4], b[5])
    }

    /// `52:54:00:12:34:56` (also `-` separated); nil when it is not six hex octets.
    public init?(parsing text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var b: [UInt8] = []
        for p in parts {
            guard p.count <= 2, let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        self.init(b)
    }

    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }
    public var isMulticast: Bool { bytes.0 & 1 != 0 }
    public var isZero: Bool { array.allSatisfy { $0 == 0 } }
    public static let broadcast = MACAddress([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])

    /// A random locally administered unicast address (spec: without VIRTIO_NET_F_MAC the driver SHOULD use one).
    public static func randomLocal() -> MACAddress {
        var b = (0..<6).map { _ in UInt8.random(in: 0...255) }
        b[0] = (b[0] & 0xFC) | 0x02
        return MACAddress(b)
    }

    public var description: String { array.map { hex2($0) }.joined(separator: ":") }
    public static func == (a: Self, b: Self) -> Bool { a.array == b.array }
    public func hash(into h: inout Hasher) { h.combine(array) }
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let m = MACAddress(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a MAC address: \(text)"))
        }
        self = m
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

func hex2(_ v: UInt8) -> String { v < 16 ? "0" + String(v, radix: 16) : String(v, radix: 16) }

/// `struct virtio_net_config` as the negotiated features make it valid; fields not offered are nil
/// (never read: QEMU answers all ones past the fields it offers, digest §2).
public struct NetConfig: Sendable, Equatable {
    /// The device's MAC (nil without VIRTIO_NET_F_MAC).
    public var mac: MACAddress?
    /// `status` (nil without VIRTIO_NET_F_STATUS: the link is up).
    public var status: UInt16?
    /// `max_virtqueue_pairs` (nil without MQ).
    public var maxQueuePairs: UInt16?
    public var mtu: UInt16?
    /// Mbit/s; nil when not offered or unknown (> 0x7fffffff).
    public var speed: UInt32?
    /// 0 half, 1 full (ethtool values, digest §2 erratum); nil when not offered or unknown.
    public var duplex: UInt8?

    public var linkUp: Bool { status.map { $0 & NetStatusBit.linkUp != 0 } ?? true }
    public var announceRequested: Bool { status.map { $0 & NetStatusBit.announce != 0 } ?? false }

    /// Reads what `features` makes valid inside one config_generation window.
    public static func read<T>(from device: VirtioDevice<T>, features f: FeatureSet) throws(VirtioError) -> NetConfig {
        try device.readConfig { (c: ConfigReader) throws(VirtioError) -> NetConfig in
            var cfg = NetConfig()
            if f.contains(NetFeature.mac) {
                var b: [UInt8] = []
                for i in 0..<NetConfigField.macLength { b.append(try c.u8(NetConfigField.mac + i)) }
                cfg.mac = MACAddress(b)
            }
            if f.contains(NetFeature.status) { cfg.status = try c.u16(NetConfigField.status) }
            if f.contains(NetFeature.mq) { cfg.maxQueuePairs = try c.u16(NetConfigField.maxVirtqueuePairs) }
            if f.contains(NetFeature.mtu) { cfg.mtu = try c.u16(NetConfigField.mtu) }
            if f.contains(NetFeature.speedDuplex) {
                let s = try c.u32(NetConfigField.speed), d = try c.u8(NetConfigField.duplex)
                // C8: speed past 0x7fffffff and duplex outside {0, 1} mean unknown.
                cfg.speed = s <= 0x7fff_ffff ? s : nil
                cfg.duplex = d <= 1 ? d : nil
            }
            return cfg
        }
    }

    /// Queue pairs usable (H9: a value outside 1...0x8000 means 1).
    public var usablePairs: Int {
        guard let m = maxQueuePairs, m >= NetControl.pairsMin, m <= NetControl.pairsMax else { return 1 }
        return Int(m)
    }
}
