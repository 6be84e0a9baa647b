import ArgumentParser
import Synchronization
import VirtioAttach
import VirtioLoad
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice
#if canImport(Glibc)
import Glibc
#endif

/// A parent may have started us with SIGINT/SIGTERM blocked (the mask is inherited, as Foundation's
/// Process leaves it): unblock them so the handlers run.
func unblockStopSignals() {
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGINT)
    sigaddset(&unblock, SIGTERM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
}

/// Set by SIGINT/SIGTERM; the attach loop ends, resets the device and removes its region.
let attachStop = Atomic<Bool>(false)

extension VirtioCtl {
    /// `virtioctl attach DEVICE`: the long-running owner of a device.
    struct Attach: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Attach to a device and own it: answer its statistics queue, keep the driver's counters in a statistics region, optionally run a block load; SIGINT/SIGTERM resets the device and removes the region.",
            discussion: "Devices: virtio-blk (soft:blk, PCI) and virtio-balloon (soft:balloon, PCI). Read the region with `virtioctl stats PATH`.")

        @OptionGroup var device: DeviceOptions
        @Option(help: "Statistics region to create (e.g. /dev/shm/virtio-blk.stats); removed on exit.") var statsFile: String?
        @Option(help: "Block load while attached: PATTERN[,qd=N][,bs=SIZE], e.g. randread,qd=4.") var load: String?
        @Option(help: "Region update period in milliseconds.") var intervalMs: Int = 200
        @Option(help: "Stop after this many seconds (default: until SIGINT/SIGTERM).") var duration: Double?
        @Flag(help: "Accept the seed-000 draft virtio-blk statistics queue (feature bit 23) when the device offers it.")
        var blkStatsVq = false

        func validate() throws {
            guard (10...60_000).contains(intervalMs) else { throw ValidationError("--interval-ms must be 10...60000") }
            if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        }

        func run() throws {
            let loadSpec = try load.map(LoadSpec.init(parsing:))
            signal(SIGINT) { _ in attachStop.store(true, ordering: .releasing) }
            signal(SIGTERM) { _ in attachStop.store(true, ordering: .releasing) }
            unblockStopSignals()
            try DeviceOpening.open(try device.spec(), options: try device.openOptions(), Run(command: self, load: loadSpec))
        }

        /// Attach on whatever transport was opened: the balloon loop or the block loop.
        struct Run: TransportUser {
            let command: Attach
            let load: LoadSpec?

            func run<T: VirtioTransport>(_ t: T, soft: SoftFunction?) throws {
                if t.deviceType == .balloon {
                    guard load == nil else { throw CLIError("--load needs a block device; \(t.name) is a balloon") }
                    var interval = 0
                    var function: SoftPCIFunction<SoftBalloon>?
                    if case let .balloon(f) = soft {
                        function = f
                        interval = f.personality.options.statsInterval
                    }
                    try command.runBalloon(t, soft: function, interval: interval)
                    return
                }
                let o = try command.device.openOptions()
                let attach = try o.blockAttachOptions(for: try command.device.spec(), draftStatsQueue: command.blkStatsVq)
                try command.runBlock(try BlockDevice(transport: t, options: attach, logger: o.logger), soft: soft?.block, load: load)
            }
        }

        func region(_ id: String, _ stats: DriverStatistics) throws -> StatsRegionWriter? {
            guard let statsFile else { return nil }
            let w = try StatsRegionWriter(path: statsFile, layout: stats.layout)
            note("virtioctl: statistics region \(statsFile) (\(stats.layout.descriptors.count) statistics); read it with `virtioctl stats \(statsFile)`")
            return w
        }

        var deadline: UInt64? { duration.map { monotonicNanoseconds() + UInt64($0 * 1e9) } }

        func runBalloon<T: VirtioTransport>(_ t: T, soft: SoftPCIFunction<SoftBalloon>?, interval: Int) throws {
            let balloon = try BalloonDevice(transport: t, policy: try device.openOptions().policy(for: .balloon), logger: device.logger)
            let stats = DriverStatistics(id: "virtio-balloon \(t.name)", queues: 0, block: false, balloon: true)
            let writer = try region("virtio-balloon \(t.name)", stats)
            defer { writer?.remove() }
            note("virtioctl: attached \(t.name) (balloon\(balloon.stats == nil ? ", no statistics queue" : "")); SIGINT or SIGTERM to stop")
            let end = deadline
            var nextUpdate: UInt64 = 0, nextSoftRequest: UInt64 = 0
            while !attachStop.load(ordering: .acquiring) {
                let now = monotonicNanoseconds()
                if let end, now >= end { break }
                // A soft device asks on its own clock (stats_interval), here in the same loop.
                if let soft, interval > 0, now >= nextSoftRequest {
                    soft.requestStatistics()
                    nextSoftRequest = now + UInt64(interval) * 1_000_000
                }
                let answered = try balloon.poll()
                if let writer, answered || now >= nextUpdate {
                    writer.update { v in stats.write(balloon: balloon.stats?.lastPosted ?? [], requests: balloon.stats?.requests ?? 0, to: v) }
                    nextUpdate = now + UInt64(intervalMs) * 1_000_000
                }
                if !answered { usleep(1000) }
            }
            note("virtioctl: \(balloon.stats?.requests ?? 0) statistics request(s) answered; device reset")
        }

        func runBlock<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?, load: LoadSpec?) throws {
            blk.setAccounting(true)
            let stats = DriverStatistics(id: "virtio-blk \(blk.device.transport.name)", queues: blk.queueCount, block: true,
                                         balloon: false)
            let writer = try region("virtio-blk \(blk.device.transport.name)", stats)
            defer { writer?.remove() }
            try blk.startStatistics()
            note("virtioctl: attached \(blk.device.transport.name) (blk, \(blk.queueCount) queue(s)\(blk.stats != nil ? ", draft statistics queue" : ""))\(load.map { ", load \($0.pattern.rawValue) qd \($0.depth)" } ?? ""); SIGINT or SIGTERM to stop")
            var generator = try load.map { try LoadGenerator(blk, $0) }
            let softInterval = soft.map { $0.personality.options.statsInterval } ?? 0
            let end = deadline
            var nextUpdate: UInt64 = 0, nextSoftRequest: UInt64 = 0
            while !attachStop.load(ordering: .acquiring) {
                let now = monotonicNanoseconds()
                if let end, now >= end { break }
                if let soft, softInterval > 0, now >= nextSoftRequest {
                    soft.requestStatistics()
                    nextSoftRequest = now + UInt64(softInterval) * 1_000_000
                }
                let worked = try generator?.step() ?? false
                let answered = try blk.pollStatistics()
                if let writer, answered || now >= nextUpdate {
                    writer.update { v in
                        for q in 0..<blk.queueCount { stats.write(queue: q, blk.counters(queue: q), io: blk.io(queue: q), to: v) }
                        stats.write(block: blk.statEntries(), requests: blk.stats?.requests ?? 0, to: v)
                    }
                    nextUpdate = now + UInt64(intervalMs) * 1_000_000
                }
                if !worked && !answered { usleep(1000) }
            }
            _ = try? generator?.drain()
            generator = nil
            let io = blk.ioCounters
            note("virtioctl: \(io.readIOs) reads, \(io.writeIOs) writes, \(io.errors) errors; \(blk.stats?.requests ?? 0) statistics request(s) answered; device reset")
        }
    }
}
