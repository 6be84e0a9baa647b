import Testing
import VirtioWire

/// testpmd's frames and icmpecho's answers: every checksum recomputed from scratch, not patched.
struct NetPacketTests {
    static let ours: [UInt8] = [0x52, 0x54, 0, 0x12, 0x34, 0x56], theirs: [UInt8] = [0x02, 0, 0, 0, 0, 0x07]
    static let ourIP: UInt32 = 0xA9FE_0002, theirIP: UInt32 = 0xA9FE_0001  // 169.254.0.2 / .1

    /// The ones'-complement sum of a region is 0xffff when its checksum field is right.
    func checksumHolds(_ bytes: ArraySlice<UInt8>) -> Bool {
        Array(bytes).withUnsafeBytes { NetPackets.onesComplementSum($0.baseAddress!, count: $0.count) } == 0xffff
    }

    @Test(arguments: [42, 64, 65, 1514])
    func udpFrameIsWellFormed(length: Int) {
        var f = [UInt8](repeating: 0xEE, count: 1600)
        let n = f.withUnsafeMutableBytes {
            NetPackets.writeUDP(into: $0, length: length, destination: Self.ours, source: Self.theirs,
                                sourceIP: Self.theirIP, destinationIP: Self.ourIP)
        }
        #expect(n == length)
        #expect(Array(f[0..<6]) == Self.ours && Array(f[6..<12]) == Self.theirs && f[12] == 8 && f[13] == 0)
        #expect(checksumHolds(f[14..<34]), "IPv4 header checksum")
        #expect(Int(f[16]) << 8 | Int(f[17]) == length - 14)
        #expect(f[22] == 64 && f[23] == 17)
        #expect(Array(f[26..<30]) == [169, 254, 0, 1] && Array(f[30..<34]) == [169, 254, 0, 2])
        #expect(Int(f[38]) << 8 | Int(f[39]) == length - 34)
        #expect(f[length...].allSatisfy { $0 == 0xEE }, "wrote past the frame")
        #expect(f.withUnsafeMutableBytes { NetPackets.writeUDP(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<40]), length: 41,
                                                                 destination: Self.ours, source: Self.theirs, sourceIP: 0, destinationIP: 0) } == 0)
    }

    @Test func arpRequestForOurAddressIsAnswered() {
        var f = [UInt8](repeating: 0, count: 60)
        for i in 0..<6 { f[i] = 0xff; f[6 + i] = Self.theirs[i] }
        f[12] = 0x08; f[13] = 0x06
        let arp: [UInt8] = [0, 1, 8, 0, 6, 4, 0, 1] + Self.theirs + [169, 254, 0, 1] + [0, 0, 0, 0, 0, 0] + [169, 254, 0, 2]
        f.replaceSubrange(14..<42, with: arp)
        let other = f
        #expect(f.withUnsafeMutableBytes { NetPackets.answer($0, ip: Self.ourIP, mac: Self.ours) } == .arpReply)
        #expect(Array(f[0..<6]) == Self.theirs && Array(f[6..<12]) == Self.ours)
        #expect(f[20] == 0 && f[21] == 2, "op reply")
        #expect(Array(f[22..<28]) == Self.ours && Array(f[28..<32]) == [169, 254, 0, 2])
        #expect(Array(f[32..<38]) == Self.theirs && Array(f[38..<42]) == [169, 254, 0, 1])
        // A request for someone else's address is left alone.
        var g = other
        #expect(g.withUnsafeMutableBytes { NetPackets.answer($0, ip: 0xA9FE_0009, mac: Self.ours) } == .none)
        #expect(g == other)
    }

    @Test(arguments: [8, 56, 1472])
    func echoRequestBecomesAValidReply(payload: Int) {
        let ipLength = 20 + 8 + payload
        var f = [UInt8](repeating: 0, count: 14 + ipLength)
        for i in 0..<6 { f[i] = Self.ours[i]; f[6 + i] = Self.theirs[i] }
        f[12] = 8
        f.replaceSubrange(14..<34, with: [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xff), 0x12, 0x34, 0x40, 0, 64, 1, 0, 0,
                                          169, 254, 0, 1, 169, 254, 0, 2])
        let ipSum = ~f[14..<34].withUnsafeBytes { NetPackets.onesComplementSum($0.baseAddress!, count: 20) }
        f[24] = UInt8(ipSum >> 8); f[25] = UInt8(ipSum & 0xff)
        f[34] = 8; f[38] = 0xBE; f[39] = 0xEF; f[40] = 0; f[41] = 1
        for i in 0..<payload { f[42 + i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
        let icmpSum = ~f[34...].withUnsafeBytes { NetPackets.onesComplementSum($0.baseAddress!, count: $0.count) }
        f[36] = UInt8(icmpSum >> 8); f[37] = UInt8(icmpSum & 0xff)
        #expect(checksumHolds(f[34...]))
        let request = f
        #expect(f.withUnsafeMutableBytes { NetPackets.answer($0, ip: Self.ourIP, mac: Self.ours) } == .echoReply)
        #expect(Array(f[0..<6]) == Self.theirs && Array(f[6..<12]) == Self.ours)
        #expect(Array(f[26..<30]) == [169, 254, 0, 2] && Array(f[30..<34]) == [169, 254, 0, 1])
        #expect(f[34] == 0 && f[35] == 0, "type echo reply")
        #expect(checksumHolds(f[14..<34]), "IPv4 checksum after the swap")
        #expect(checksumHolds(f[34...]), "ICMP checksum recomputed from scratch")
        #expect(f[38...41] == request[38...41] && f[42...] == request[42...], "id, sequence and payload kept")
        // Not for us: untouched.
        var g = request
        #expect(g.withUnsafeMutableBytes { NetPackets.answer($0, ip: 0xA9FE_0003, mac: Self.ours) } == .none)
        #expect(g == request)
    }

    @Test func addressesParseAndOnlyLinkLocalCounts() {
        #expect(NetPackets.parseIPv4("169.254.0.2") == 0xA9FE_0002)
        for bad in ["169.254.0", "1.2.3.256", "a.b.c.d", "1..2.3", ""] { #expect(NetPackets.parseIPv4(bad) == nil, "\(bad)") }
        #expect(NetPackets.isLinkLocal(0xA9FE_1234))
        #expect(!NetPackets.isLinkLocal(0xC0A8_0001) && !NetPackets.isLinkLocal(0x0A00_0001))
    }
}
