import ArgumentParser
import Foundation
import Synchronization
import VirtioAttach
import VirtioCore
import VirtioDrivers
import VirtioLoad
import VirtioSoftDevice
import VirtioWire

extension VirtioCtl {
    /// `virtioctl net ...`: a virtio-net device, in testpmd's manner.
    struct Net: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A virtio-net device: its state, forwarding in testpmd's modes, control commands.",
            discussion: "--queues counts queue pairs (testpmd's --rxq/--txq). Devices: soft:net[,key=value...] ("
                + SoftNetOptions.keys.map(\.0).joined(separator: ", ") + "), a PCI address, vfio-user:PATH or vhost-user:PATH,type=net.",
            subcommands: [NetInfo.self, Fwd.self, Ctrl.self])
    }
}

/// Set by SIGINT/SIGTERM: forwarding stops, prints its totals, resets the device.
let netStop = Atomic<Bool>(false)

/// `net info`: what testpmd's `show port info` shows.
struct NetInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "MAC, link, MTU, queue pairs, speed and the negotiated features.")
    @OptionGroup var device: DeviceOptions

    struct Report: Codable {
        var device: String
        var mac: MACAddress
        var link: String
        var mtu: Int
        var maxQueuePairs: Int
        var queuePairs: Int
        var speedMbps: UInt32?
        var duplex: String?
        var controlQueue: Bool
        var mergeableBuffers: Bool
        var offered: [NamedFeature]
        var negotiated: [NamedFeature]
        var queues: [QueueInfo]
    }

    struct User: NetDeviceUser {
        func run<T: VirtioTransport>(_ net: NetDevice<T>, soft: SoftPCIFunction<SoftNet>?) throws -> Report {
            let d = net.device
            return Report(device: d.transport.name, mac: net.mac, link: net.linkUp ? "up" : "down",
                          mtu: Int(net.config.mtu ?? 1500), maxQueuePairs: net.config.usablePairs, queuePairs: net.activePairs,
                          speedMbps: net.config.speed, duplex: net.config.duplex.map { $0 == 1 ? "full" : "half" },
                          controlQueue: net.hasControlQueue, mergeableBuffers: net.has(NetFeature.mrgRxbuf),
                          offered: namedFeatures(d.offered, d.deviceType), negotiated: namedFeatures(d.negotiated, d.deviceType),
                          queues: d.queues)
        }
    }

    func run() throws {
        let r = try device.withNetDevice(User())
        if device.output == .json { try printJSON(r); return }
        func line(_ k: String, _ v: String) { print(k.padding(toLength: 18, withPad: " ", startingAt: 0) + v) }
        line("device", r.device)
        line("MAC address", "\(r.mac)")
        line("link", r.link + (r.speedMbps.map { ", \($0) Mbit/s" } ?? "") + (r.duplex.map { ", \($0) duplex" } ?? ""))
        line("MTU", "\(r.mtu)")
        line("queue pairs", "\(r.queuePairs) in use of \(r.maxQueuePairs)")
        line("control queue", r.controlQueue ? "yes" : "no")
        line("rx buffers", r.mergeableBuffers ? "mergeable (MRG_RXBUF)" : "one per frame")
        print("negotiated features:")
        for f in r.negotiated { print("  \(String(f.bit).leftPad(2))  \(f.name)") }
        print("queues:")
        for q in r.queues {
            let role = q.index == r.queues.count - 1 && r.controlQueue ? "control" : (q.index % 2 == 0 ? "rx" : "tx")
            print("  \(q.index): \(role), size \(q.size), \(q.layout.rawValue)" + (q.inOrder ? ", in-order" : "")
                  + (q.vector.map { ", MSI-X vector \($0)" } ?? ", polled"))
        }
    }
}

/// `net ctrl`: control-queue commands, each acknowledgement shown (testpmd's `set promisc`, `mac_addr set`, `port config rxq`).
struct Ctrl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send control-queue commands (promiscuous, all-multicast, MAC, queue pairs) and show each acknowledgement.",
        discussion: "The device is reset when the command ends, as for every verb: settings last for this attachment.")
    @OptionGroup var device: DeviceOptions
    @Option(help: "Promiscuous mode: on or off.") var promisc: OnOff?
    @Option(help: "All-multicast mode: on or off.") var allmulti: OnOff?
    @Option(help: "Set the MAC address (MAC_ADDR_SET), e.g. 02:00:00:00:00:01.") var mac: String?
    @Option(help: "Queue pairs to enable (MQ_VQ_PAIRS_SET).") var pairs: Int?

    struct User: NetDeviceUser {
        let c: Ctrl
        func run<T: VirtioTransport>(_ net: NetDevice<T>, soft: SoftPCIFunction<SoftNet>?) throws -> [String: String] {
            var acks: [String: String] = [:]
            func send(_ name: String, _ body: () throws(NetError) -> Void) throws {
                do { try body(); acks[name] = "ok" } catch NetError.commandRefused { acks[name] = "refused (VIRTIO_NET_ERR)" }
            }
            if let p = c.promisc { try send("promisc") { () throws(NetError) in try net.setPromiscuous(p == .on) } }
            if let a = c.allmulti { try send("allmulti") { () throws(NetError) in try net.setAllMulticast(a == .on) } }
            if let m = c.mac {
                guard let mac = MACAddress(parsing: m) else { throw CLIError("--mac \(m): expected six hex octets like 02:00:00:00:00:01") }
                try send("mac") { () throws(NetError) in try net.setMAC(mac) }
                acks["mac_now"] = "\(net.config.mac.map { "\($0)" } ?? "-")"
            }
            if let p = c.pairs { try send("pairs") { () throws(NetError) in try net.setQueuePairs(p) } }
            return acks
        }
    }

    func validate() throws {
        guard promisc != nil || allmulti != nil || mac != nil || pairs != nil else {
            throw ValidationError("nothing to send: give --promisc, --allmulti, --mac or --pairs")
        }
    }

    func run() throws {
        var d = device
        if let pairs, d.queues == nil { d.queues = pairs }  // the queues must exist before VQ_PAIRS_SET (M1)
        let acks = try d.withNetDevice(User(c: self))
        if device.output == .json { try printJSON(acks) } else { for (k, v) in acks.sorted(by: { $0.key < $1.key }) { print("\(k): \(v)") } }
        if acks.values.contains(where: { $0.hasPrefix("refused") }) { throw ExitCode(1) }
    }
}


extension DeviceOptions {
    /// Attaches the net driver to DEVICE and hands it to `user`; the device is reset when done.
    func withNetDevice<U: NetDeviceUser>(_ user: U, checksum: Bool = false) throws -> U.Result {
        let o = try openOptions()
        var a = try o.netAttachOptions()
        a.checksumOffload = checksum
        return try DeviceOpening.withNetDevice(try spec(), options: o, attach: a, user)
    }
}
