/// Ethernet, ARP, IPv4, UDP and ICMP bytes as testpmd's engines write and answer them: the UDP
/// frame of `txonly`, the ARP and echo replies of `icmpecho`, the MAC swap of `macswap`.
/// Everything works in place on raw frame memory and allocates nothing.
public enum NetPackets {
    public static let ethernetHeader = 14
    public static let etherTypeIPv4: UInt16 = 0x0800, etherTypeARP: UInt16 = 0x0806
    /// The smallest Ethernet frame without its FCS (what a NIC pads to).
    public static let minimumFrame = 60

    @inlinable static func be16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(p.load(fromByteOffset: o, as: UInt8.self)) << 8 | UInt16(p.load(fromByteOffset: o + 1, as: UInt8.self))
    }
    @inlinable static func put16(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt16) {
        p.storeBytes(of: UInt8(v >> 8), toByteOffset: o, as: UInt8.self)
        p.storeBytes(of: UInt8(v & 0xff), toByteOffset: o + 1, as: UInt8.self)
    }
    @inlinable static func put32(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt32) {
        put16(p, o, UInt16(v >> 16))
        put16(p, o + 2, UInt16(v & 0xffff))
    }

    /// The frame's EtherType (0 when shorter than an Ethernet header).
    @inlinable
    public static func etherType(_ frame: UnsafeRawBufferPointer) -> UInt16 {
        frame.count >= ethernetHeader ? be16(frame.baseAddress!, 12) : 0
    }

    /// RFC 1071 ones'-complement sum of `count` bytes at `p`, folded, not inverted.
    @inlinable
    public static func onesComplementSum(_ p: UnsafeRawPointer, count: Int, initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = 0
        while i + 1 < count {
            sum &+= UInt32(be16(p, i))
            i += 2
        }
        if i < count { sum &+= UInt32(p.load(fromByteOffset: i, as: UInt8.self)) << 8 }
        while sum > 0xffff { sum = (sum & 0xffff) &+ (sum >> 16) }
        return UInt16(sum)
    }

    /// Writes testpmd txonly's frame: Ethernet to `destination` from `source`, IPv4 (TTL 64, checksum
    /// computed) from `sourceIP` to `destinationIP`, UDP ports 9 to 9 with checksum 0, payload zeroed.
    /// Returns the length, `length` (at least 42), or 0 when `buffer` is too small.
    @inlinable
    public static func writeUDP(into buffer: UnsafeMutableRawBufferPointer, length: Int, destination: [UInt8],
                                source: [UInt8], sourceIP: UInt32, destinationIP: UInt32) -> Int {
        guard length >= 42, length <= buffer.count, length <= 65535, let p = buffer.baseAddress else { return 0 }
        for i in 0..<6 {
            p.storeBytes(of: destination[i], toByteOffset: i, as: UInt8.self)
            p.storeBytes(of: source[i], toByteOffset: 6 + i, as: UInt8.self)
        }
        put16(p, 12, etherTypeIPv4)
        let ipLength = length - ethernetHeader
        let ip = p + ethernetHeader
        put16(ip, 0, 0x4500)
        put16(ip, 2, UInt16(ipLength))
        put32(ip, 4, 0)          // id 0, no fragments
        put16(ip, 8, 0x4011)     // TTL 64, UDP
        put16(ip, 10, 0)
        put32(ip, 12, sourceIP)
        put32(ip, 16, destinationIP)
        put16(ip, 10, ~onesComplementSum(ip, count: 20))
        let udp = ip + 20
        put16(udp, 0, 9)
        put16(udp, 2, 9)
        put16(udp, 4, UInt16(ipLength - 20))
        put16(udp, 6, 0)
        if length > 42 { (p + 42).initializeMemory(as: UInt8.self, repeating: 0, count: length - 42) }
        return length
    }

    /// Swaps destination and source MAC in place (testpmd macswap).
    @inlinable
    public static func swapMACs(_ p: UnsafeMutableRawPointer) {
        for i in 0..<6 {
            let a = p.load(fromByteOffset: i, as: UInt8.self)
            p.storeBytes(of: p.load(fromByteOffset: 6 + i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
            p.storeBytes(of: a, toByteOffset: 6 + i, as: UInt8.self)
        }
    }

    /// What `answer` did with a frame.
    public enum Answer: Sendable, Equatable {
        case none, arpReply, echoReply
    }

    /// testpmd icmpecho, in place: an ARP request for `ip` becomes the reply from `mac`; an ICMPv4
    /// echo request to `ip` becomes the echo reply (MACs and IPs swapped, type 0, checksum patched).
    /// Anything else is left alone (`.none`). Replies come from `mac`, the device's address, so a
    /// NIC that filters on its MAC takes them (digest §9).
    @inlinable
    public static func answer(_ frame: UnsafeMutableRawBufferPointer, ip: UInt32, mac: [UInt8]) -> Answer {
        guard let p = frame.baseAddress, frame.count >= 42 else { return .none }
        switch be16(p, 12) {
        case etherTypeARP:
            let a = p + ethernetHeader
            // Ethernet/IPv4 ARP request (htype 1, ptype 0x800, hlen 6, plen 4, op 1) for our address.
            guard be16(a, 0) == 1, be16(a, 2) == etherTypeIPv4, a.load(fromByteOffset: 4, as: UInt8.self) == 6,
                  a.load(fromByteOffset: 5, as: UInt8.self) == 4, be16(a, 6) == 1,
                  UInt32(be16(a, 24)) << 16 | UInt32(be16(a, 26)) == ip else { return .none }
            put16(a, 6, 2)
            for i in 0..<6 {
                // Target hardware/protocol = the asker; sender = us.
                a.storeBytes(of: a.load(fromByteOffset: 8 + i, as: UInt8.self), toByteOffset: 18 + i, as: UInt8.self)
                a.storeBytes(of: mac[i], toByteOffset: 8 + i, as: UInt8.self)
                p.storeBytes(of: p.load(fromByteOffset: 6 + i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
                p.storeBytes(of: mac[i], toByteOffset: 6 + i, as: UInt8.self)
            }
            let asker = UInt32(be16(a, 14)) << 16 | UInt32(be16(a, 16))
            put32(a, 24, asker)
            put32(a, 14, ip)
            return .arpReply
        case etherTypeIPv4:
            let ip4 = p + ethernetHeader
            let ihl = Int(ip4.load(fromByteOffset: 0, as: UInt8.self) & 0x0f) * 4
            guard ip4.load(fromByteOffset: 0, as: UInt8.self) >> 4 == 4, ihl == 20,  // no IP options, as testpmd
                  ip4.load(fromByteOffset: 9, as: UInt8.self) == 1,
                  UInt32(be16(ip4, 16)) << 16 | UInt32(be16(ip4, 18)) == ip,
                  frame.count >= ethernetHeader + ihl + 8 else { return .none }
            let icmp = ip4 + ihl
            guard icmp.load(fromByteOffset: 0, as: UInt8.self) == 8, icmp.load(fromByteOffset: 1, as: UInt8.self) == 0 else {
                return .none
            }
            for i in 0..<6 {
                p.storeBytes(of: p.load(fromByteOffset: 6 + i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
                p.storeBytes(of: mac[i], toByteOffset: 6 + i, as: UInt8.self)
            }
            let src = UInt32(be16(ip4, 12)) << 16 | UInt32(be16(ip4, 14))
            put32(ip4, 12, ip)
            put32(ip4, 16, src)
            icmp.storeBytes(of: 0, toByteOffset: 0, as: UInt8.self)
            // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), the word m = type|code going from 0x0800 to 0.
            var sum = UInt32(~be16(icmp, 2)) &+ UInt32(~UInt16(0x0800))
            sum = (sum & 0xffff) &+ (sum >> 16)
            sum = (sum & 0xffff) &+ (sum >> 16)
            put16(icmp, 2, ~UInt16(sum & 0xffff))
            return .echoReply
        default:
            return .none
        }
    }

    /// Writes a broadcast ARP request from `source` (`sourceIP`) asking who has `targetIP`, padded
    /// to the 60-byte minimum. Returns 60, or 0 when `buffer` is too small.
    @inlinable
    public static func writeARPRequest(into buffer: UnsafeMutableRawBufferPointer, source: [UInt8],
                                       sourceIP: UInt32, targetIP: UInt32) -> Int {
        guard buffer.count >= minimumFrame, let p = buffer.baseAddress else { return 0 }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: minimumFrame)
        let a = p + ethernetHeader
        for i in 0..<6 {
            p.storeBytes(of: 0xff, toByteOffset: i, as: UInt8.self)
            p.storeBytes(of: source[i], toByteOffset: 6 + i, as: UInt8.self)
            a.storeBytes(of: source[i], toByteOffset: 8 + i, as: UInt8.self)
        }
        put16(p, 12, etherTypeARP)
        put16(a, 0, 1)               // htype Ethernet
        put16(a, 2, etherTypeIPv4)   // ptype IPv4
        put16(a, 4, 0x0604)          // hlen 6, plen 4
        put16(a, 6, 1)               // request
        put32(a, 14, sourceIP)
        put32(a, 24, targetIP)
        return minimumFrame
    }

    /// The sender of an ARP reply addressed to `mac`, or nil when the frame is anything else.
    @inlinable
    public static func arpReply(_ frame: UnsafeRawBufferPointer, to mac: [UInt8]) -> (ip: UInt32, mac: [UInt8])? {
        guard frame.count >= 42, let p = frame.baseAddress, be16(p, 12) == etherTypeARP else { return nil }
        let a = p + ethernetHeader
        guard be16(a, 0) == 1, be16(a, 2) == etherTypeIPv4, be16(a, 4) == 0x0604, be16(a, 6) == 2,
              (0..<6).allSatisfy({ a.load(fromByteOffset: 18 + $0, as: UInt8.self) == mac[$0] }) else { return nil }
        return (UInt32(be16(a, 14)) << 16 | UInt32(be16(a, 16)), (0..<6).map { a.load(fromByteOffset: 8 + $0, as: UInt8.self) })
    }

    /// An IPv4 address in dotted form, as a host-order integer.
    public static func parseIPv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard let b = UInt8(p) else { return nil }
            v = v << 8 | UInt32(b)
        }
        return v
    }

    /// A host-order IPv4 address in dotted form.
    public static func dotted(_ ip: UInt32) -> String {
        "\(ip >> 24).\(ip >> 16 & 0xff).\(ip >> 8 & 0xff).\(ip & 0xff)"
    }

    /// True for 169.254.0.0/16, the only IPv4 range tests here may use.
    public static func isLinkLocal(_ ip: UInt32) -> Bool { ip >> 16 == 0xA9FE }
}
