/// Offsets of `struct virtio_net_config` fields (`device-types/net/description.tex`). Each is
/// present only when the feature that defines it is offered (QEMU reads all ones past the last).
public enum NetConfigField {
    public static let mac = 0, status = 6, maxVirtqueuePairs = 8, mtu = 10, speed = 12, duplex = 16
    public static let rssMaxKeySize = 17, rssMaxIndirectionTableLength = 18, supportedHashTypes = 20
    public static let macLength = 6
}

/// `status` bits of the net config.
public enum NetStatusBit {
    public static let linkUp: UInt16 = 1, announce: UInt16 = 2
}

/// `struct virtio_net_hdr` with VERSION_1 (12 bytes, `num_buffers` included, mergeable or not).
public struct NetHeader: Sendable, Equatable {
    @inlinable public static var size: Int { 12 }
    /// `flags`: NEEDS_CSUM (csum_start/csum_offset say where), DATA_VALID (the device checked it), RSC_INFO.
    public static let needsChecksum: UInt8 = 1, dataValid: UInt8 = 2, rscInfo: UInt8 = 4
    /// `gso_type`: NONE, TCPV4, UDP, TCPV6, UDP_L4, and the ECN bit.
    public static let gsoNone: UInt8 = 0, gsoTCPv4: UInt8 = 1, gsoUDP: UInt8 = 3, gsoTCPv6: UInt8 = 4, gsoUDPL4: UInt8 = 5,
                      gsoECN: UInt8 = 0x80
    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16
    public var numBuffers: UInt16

    @inlinable
    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0, numBuffers: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.numBuffers = numBuffers
    }

    /// Writes the header at `p` (DMA memory; any alignment).
    @inlinable
    public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
        p.storeBytes(of: numBuffers.littleEndian, toByteOffset: 10, as: UInt16.self)
    }

    /// Reads a header from 12 bytes the other side wrote.
    @inlinable
    public init(loading p: UnsafeRawPointer) {
        self.init(flags: p.load(fromByteOffset: 0, as: UInt8.self), gsoType: p.load(fromByteOffset: 1, as: UInt8.self),
                  headerLength: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)),
                  gsoSize: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)),
                  checksumStart: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)),
                  checksumOffset: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self)),
                  numBuffers: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 10, as: UInt16.self)))
    }
}

/// The control virtqueue's commands (`u8 class; u8 command; data...; u8 ack`) and acks.
public enum NetControl {
    public static let ok: UInt8 = 0, err: UInt8 = 1
    public static let classRX: UInt8 = 0, classMAC: UInt8 = 1, classVLAN: UInt8 = 2, classAnnounce: UInt8 = 3,
                      classMQ: UInt8 = 4, classGuestOffloads: UInt8 = 5
    /// Class RX: PROMISC, ALLMULTI, ALLUNI, NOMULTI, NOUNI, NOBCAST (data: u8 0/1).
    public static let rxPromisc: UInt8 = 0, rxAllMulti: UInt8 = 1, rxAllUni: UInt8 = 2, rxNoMulti: UInt8 = 3,
                      rxNoUni: UInt8 = 4, rxNoBroadcast: UInt8 = 5
    /// Class MAC: TABLE_SET (two le32-counted tables), ADDR_SET (6 bytes).
    public static let macTableSet: UInt8 = 0, macAddrSet: UInt8 = 1
    /// Class ANNOUNCE: ACK. Class MQ: VQ_PAIRS_SET (le16), RSS_CONFIG, HASH_CONFIG.
    public static let announceAck: UInt8 = 0, mqPairsSet: UInt8 = 0, mqRSSConfig: UInt8 = 1, mqHashConfig: UInt8 = 2
    /// VQ_PAIRS_SET's bounds (`VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN/MAX`).
    public static let pairsMin: UInt16 = 1, pairsMax: UInt16 = 0x8000

    /// TABLE_SET's data: le32 N, N unicast addresses, le32 M, M multicast addresses, nothing more
    /// (at most 1024 each); nil when the sizes do not add up.
    public static func macTables(_ d: [UInt8]) -> (unicast: [[UInt8]], multicast: [[UInt8]])? {
        func u32(_ o: Int) -> Int? {
            guard o + 4 <= d.count else { return nil }
            return Int(d[o]) | Int(d[o + 1]) << 8 | Int(d[o + 2]) << 16 | Int(d[o + 3]) << 24
        }
        guard let n = u32(0), n <= 1024, 4 + 6 * n + 4 <= d.count, let m = u32(4 + 6 * n), m <= 1024,
              8 + 6 * (n + m) == d.count else { return nil }
        let uni = (0..<n).map { Array(d[(4 + 6 * $0)..<(10 + 6 * $0)]) }
        let base = 8 + 6 * n
        let multi = (0..<m).map { Array(d[(base + 6 * $0)..<(base + 6 + 6 * $0)]) }
        return (uni, multi)
    }
}
