import Foundation
import Testing
import VirtioCore
import VirtioDrivers
import VirtioLoad
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

/// The forwarding engine behind `virtioctl net fwd`, and its captures read back by libpcap and tcpdump.
@Suite(.leakChecked) struct NetForwardTests {
    static let asker: [UInt8] = [0x02, 0, 0, 0, 0, 0x07]

    static func arpRequest(for ip: [UInt8]) -> [UInt8] {
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] + asker + [0x08, 0x06] + [0, 1, 8, 0, 6, 4, 0, 1] + asker + [169, 254, 0, 1]
            + [0, 0, 0, 0, 0, 0] + ip + [UInt8](repeating: 0, count: 18)
    }

    static func echoRequest(to mac: [UInt8], ip: [UInt8], sequence: UInt8) -> [UInt8] {
        var f = mac + asker + [0x08, 0x00] + [0x45, 0, 0, 84, 0, 1, 0x40, 0, 64, 1, 0, 0, 169, 254, 0, 1] + ip
        let ipSum = ~Array(f[14..<34]).withUnsafeBytes { NetPackets.onesComplementSum($0.baseAddress!, count: 20) }
        f[24] = UInt8(ipSum >> 8); f[25] = UInt8(ipSum & 0xff)
        var icmp: [UInt8] = [8, 0, 0, 0, 0x12, 0x34, 0, sequence] + (0..<56).map { UInt8($0) }
        let s = ~icmp.withUnsafeBytes { NetPackets.onesComplementSum($0.baseAddress!, count: $0.count) }
        icmp[2] = UInt8(s >> 8); icmp[3] = UInt8(s & 0xff)
        return f + icmp
    }

    func sumHolds(_ b: ArraySlice<UInt8>) -> Bool {
        Array(b).withUnsafeBytes { NetPackets.onesComplementSum($0.baseAddress!, count: $0.count) } == 0xffff
    }

    /// icmpecho answers the ARP request and both pings for its address, ignores a ping for another,
    /// and the capture (received and sent) holds valid replies, read back by libpcap and by tcpdump.
    @Test func icmpechoAnswersARPAndPingAndCapturesThem() throws {
        let (f, net) = try attachNet()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("icmpecho-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ours: [UInt8] = [169, 254, 0, 2]
        for frame in [Self.arpRequest(for: ours), Self.echoRequest(to: net.mac.array, ip: ours, sequence: 1),
                      Self.echoRequest(to: net.mac.array, ip: [169, 254, 0, 9], sequence: 2),
                      Self.echoRequest(to: net.mac.array, ip: ours, sequence: 3)] {
            #expect(frame.withUnsafeBytes { f.receive(pair: 0, frame: $0) } == .delivered)
        }
        var o = NetForwardOptions()
        o.mode = .icmpecho
        o.ip = 0xA9FE_0002
        o.frameLimit = 7  // 4 requests, then the 3 replies come back round the loop
        o.durationNanoseconds = 10_000_000_000
        let totals: NetForwardTotals
        do {
            let capture = try PacketCapture(path: path)
            totals = try NetForwarder.run(net, o, capture: capture, captureSent: true)
        }
        #expect(totals.arpReplies == 1 && totals.echoReplies == 2)
        #expect(totals.rx.packets == 7 && totals.tx.packets == 3 && totals.ignored == 4)
        let frames = try PacketCapture.read(path: path)
        #expect(frames.count == 7 + 3)
        let replies = frames.filter { Array($0[0..<6]) == Self.asker && Array($0[6..<12]) == net.mac.array }
        #expect(replies.count == 6, "3 sent, 3 received back")
        for r in replies where r[12] == 0x08 && r[13] == 0x00 {
            #expect(r[34] == 0 && sumHolds(r[14..<34]) && sumHolds(r[34...]), "echo reply with valid checksums")
            #expect(Array(r[26..<30]) == ours)
        }
        #expect(replies.contains { $0[12] == 0x08 && $0[13] == 0x06 && $0[21] == 2 }, "an ARP reply")
        // tcpdump reads the same file (Debian's tcpdump, installed by tools/setup.sh).
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tcpdump")
        p.arguments = ["-nn", "-r", path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(text.components(separatedBy: "ICMP echo reply").count - 1 == 4, "\(text)")
        #expect(text.contains("ARP, Reply 169.254.0.2 is-at 52:54:00:12:34:56"), "\(text)")
    }

    /// io and macswap over the loop: every frame forwarded goes round again; macswap swaps the MACs each time.
    @Test(arguments: [NetForwardMode.io, .macswap])
    func forwardingModesMoveFramesRoundTheLoop(mode: NetForwardMode) throws {
        let (f, net) = try attachNet()
        var o = NetForwardOptions()
        o.mode = mode
        o.txFirst = true
        o.peerMAC = net.mac.array
        o.frameLimit = 10_000
        o.durationNanoseconds = 30_000_000_000
        let t = try NetForwarder.run(net, o)
        #expect(t.rx.packets >= 10_000 && t.tx.packets >= t.rx.packets)
        #expect(t.rx.drops == 0 && t.tx.drops == 0)
        #expect(f.personality.counters.txFrames == t.tx.packets)
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
    }

    @Test func txonlySendsFramesOfTheGivenSize() throws {
        let (f, net) = try attachNet("backend=null")
        var o = NetForwardOptions()
        o.mode = .txonly
        o.frameSize = 128
        o.frameLimit = 5_001  // not a multiple of the burst: the last one is cut to what is left
        o.durationNanoseconds = 30_000_000_000
        let t = try NetForwarder.run(net, o)
        #expect(t.tx.packets == 5_001 && t.tx.bytes == t.tx.packets * 128 && t.tx.drops == 0)
        #expect(f.personality.counters.txFrames == t.tx.packets && f.personality.counters.txBytes == t.tx.bytes)
    }

    /// Bursts allocate nothing: transmit alone (txonly into soft:net's null backend) and receive plus
    /// transmit (io round the loop), counted on the forwarding thread after its first report.
    @Test(arguments: [NetForwardMode.txonly, .io])
    func burstsAllocateNothingInSteadyState(mode: NetForwardMode) throws {
        let (_, net) = try attachNet(mode == .txonly ? "backend=null" : "")
        var o = NetForwardOptions()
        o.mode = mode
        o.txFirst = mode == .io
        o.peerMAC = net.mac.array
        o.reportIntervalNanoseconds = 50_000_000
        o.durationNanoseconds = 600_000_000
        let t = try NetForwarder.run(net, o)
        #expect(t.steadyFrames > 1_000, "frames moved after the first report: \(t.steadyFrames)")
        #expect(t.steadyAllocations == 0, "\(t.steadyAllocations) heap allocations in \(t.steadyFrames) frames")
    }
}
