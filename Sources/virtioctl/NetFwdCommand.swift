import ArgumentParser
import Foundation
import VirtioAttach
import VirtioCore
import VirtioDrivers
import VirtioLoad
import VirtioSoftDevice
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

extension NetForwardMode: ExpressibleByArgument {}

/// `net fwd`: testpmd's forwarding modes on one device, per-second rates on stderr.
struct Fwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forward frames in testpmd's modes: io, macswap, txonly, rxonly, icmpecho.",
        discussion: """
            Rates go to stderr each second (rx/tx packets per second and bits per second); the totals go to stdout at \
            the end (`-o json` for a summary a script reads). SIGINT or SIGTERM stops, prints the totals and resets the device. \
            icmpecho answers ARP and ICMP echo requests for --ip from the device's MAC.
            """)

    @OptionGroup var device: DeviceOptions
    @Option(help: "Forwarding mode: io, macswap, txonly, rxonly or icmpecho (testpmd --forward-mode).") var mode: NetForwardMode = .io
    @Option(help: "txonly frame size in bytes, Ethernet header included, no FCS (testpmd --txpkts; 42-9014).") var size = 64
    @Option(help: "Frames per burst (testpmd --burst; 1-512).") var burst = 32
    @Option(help: "Stop after this many seconds (default: until SIGINT/SIGTERM).") var duration: Double?
    @Option(help: "Stop once this many frames came in (txonly: went out).") var frames: UInt64?
    @Option(help: "icmpecho: the IPv4 address to answer for (link-local, 169.254.0.0/16).") var ip = "169.254.0.2"
    @Option(name: .customLong("tx-ip"), help: "txonly: source and destination IPv4, comma-separated (testpmd --tx-ip).")
    var txIP = "169.254.0.1,169.254.0.2"
    @Option(name: .customLong("eth-peer"), help: "txonly: destination MAC (testpmd --eth-peer; default broadcast).") var ethPeer: String?
    @Option(help: "Write received frames to this pcap file (tcpdump -r reads it).") var pcap: String?
    @Flag(name: .customLong("pcap-sent"), help: "With --pcap, write the frames sent too.") var pcapSent = false
    @Option(name: .customLong("stats-file"), help: "Keep the per-queue counters in this statistics region (`virtioctl stats` reads it).")
    var statsFile: String?
    @Flag(name: .customLong("tx-first"), help: "io/macswap: send one burst of --size frames first (testpmd --tx-first).")
    var txFirst = false
    @Flag(help: "No per-second rates on stderr.") var quiet = false

    func validate() throws {
        guard (42...9014).contains(size) else { throw ValidationError("--size \(size): expected 42...9014 bytes") }
        guard (1...512).contains(burst) else { throw ValidationError("--burst \(burst): expected 1...512") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        guard let a = NetPackets.parseIPv4(ip), NetPackets.isLinkLocal(a) else {
            throw ValidationError("--ip \(ip): expected a link-local IPv4 address (169.254.x.y)")
        }
        let pair = txIP.split(separator: ",").map(String.init)
        guard pair.count == 2, let s = NetPackets.parseIPv4(pair[0]), let d = NetPackets.parseIPv4(pair[1]),
              NetPackets.isLinkLocal(s), NetPackets.isLinkLocal(d) else {
            throw ValidationError("--tx-ip \(txIP): expected two link-local IPv4 addresses, e.g. 169.254.0.1,169.254.0.2")
        }
        if let ethPeer, MACAddress(parsing: ethPeer) == nil { throw ValidationError("--eth-peer \(ethPeer): expected a MAC like 02:00:00:00:00:02") }
        if pcapSent, pcap == nil { throw ValidationError("--pcap-sent needs --pcap FILE") }
    }

    struct User: NetDeviceUser {
        let f: Fwd
        func run<T: VirtioTransport>(_ net: NetDevice<T>, soft: SoftPCIFunction<SoftNet>?) throws -> NetForwardTotals {
            var o = NetForwardOptions()
            o.mode = f.mode
            o.frameSize = f.size
            o.burst = f.burst
            o.durationNanoseconds = f.duration.map { UInt64($0 * 1e9) }
            o.frameLimit = f.frames
            o.ip = NetPackets.parseIPv4(f.ip)!
            let pair = f.txIP.split(separator: ",").map { NetPackets.parseIPv4(String($0))! }
            o.txSourceIP = pair[0]
            o.txDestinationIP = pair[1]
            o.peerMAC = f.ethPeer.flatMap { MACAddress(parsing: $0)?.array }
            o.interrupts = f.device.interrupts == .msix
            o.txFirst = f.txFirst
            if o.frameSize > net.maxFrame { throw CLIError("--size \(o.frameSize) is more than this device takes (MTU + 14 = \(net.maxFrame))") }
            let capture: PacketCapture?
            do { capture = try f.pcap.map { try PacketCapture(path: $0) } } catch { throw CLIError("\(error)") }
            let stats = DriverStatistics(id: "virtio-net \(net.device.transport.name)", queues: 0, block: false, balloon: false,
                                         netPairs: net.activePairs)
            let region = try f.statsFile.map { try StatsRegionWriter(path: $0, layout: stats.layout) }
            defer { region?.remove() }
            if !f.quiet {
                FileHandle.standardError.write(Data(("\(net.device.transport.name): \(f.mode.rawValue) on \(net.activePairs) pair(s), "
                    + "MAC \(net.mac), link \(net.linkUp ? "up" : "down"); SIGINT to stop\n").utf8))
            }
            var last = NetForwardTotals()
            let quiet = f.quiet
            return try NetForwarder.run(net, o, capture: capture, captureSent: f.pcapSent,
                                        shouldStop: { netStop.load(ordering: .acquiring) }) { t, dt in
                region?.update { v in
                    for p in 0..<net.activePairs {
                        stats.write(netQueue: 2 * p, net.rxStats(p), to: v)
                        stats.write(netQueue: 2 * p + 1, net.txStats(p), to: v)
                    }
                }
                if !quiet { FileHandle.standardError.write(Data((Self.rateLine(t, last, dt) + "\n").utf8)) }
                last = t
            }
        }

        /// testpmd's `show port stats` rates: packets and bits per second each way.
        static func rateLine(_ t: NetForwardTotals, _ last: NetForwardTotals, _ dt: Double) -> String {
            func rate(_ a: UInt64, _ b: UInt64) -> Double { Double(a &- b) / max(dt, 1e-9) }
            func fmt(_ v: Double) -> String { String(format: "%.0f", v) }
            return "rx-pps \(fmt(rate(t.rx.packets, last.rx.packets))) rx-bps \(fmt(8 * rate(t.rx.bytes, last.rx.bytes))) "
                + "tx-pps \(fmt(rate(t.tx.packets, last.tx.packets))) tx-bps \(fmt(8 * rate(t.tx.bytes, last.tx.bytes))) "
                + "rx-total \(t.rx.packets) tx-total \(t.tx.packets) rx-dropped \(t.rx.drops) tx-dropped \(t.tx.drops)"
        }
    }

    func run() throws {
        unblockStopSignals()
        signal(SIGINT) { _ in netStop.store(true, ordering: .releasing) }
        signal(SIGTERM) { _ in netStop.store(true, ordering: .releasing) }
        let t = try device.withNetDevice(User(f: self))
        if device.output == .json { try printJSON(t); return }
        print("rx: \(t.rx.packets) packets, \(t.rx.bytes) bytes, \(t.rx.drops) dropped, \(t.rx.errors) errors, \(t.rx.refills) buffers posted")
        print("tx: \(t.tx.packets) packets, \(t.tx.bytes) bytes, \(t.tx.drops) dropped")
        if mode == .icmpecho { print("icmpecho: \(t.arpReplies) ARP replies, \(t.echoReplies) echo replies, \(t.ignored) other frames") }
        print(String(format: "%.2f s, rx %.0f pps, tx %.0f pps", t.seconds, Double(t.rx.packets) / max(t.seconds, 1e-9),
                     Double(t.tx.packets) / max(t.seconds, 1e-9)))
        if t.steadyFrames > 0 {
            print(String(format: "steady state: %.4f heap allocations per frame (%llu in %llu frames after the first second)",
                         Double(t.steadyAllocations) / Double(t.steadyFrames), t.steadyAllocations, t.steadyFrames))
        }
    }
}
