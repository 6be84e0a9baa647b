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
            discussion: "Devices: virtio-blk (soft:blk, PCI, vfio-user:PATH, vhost-user:PATH) and virtio-balloon (soft:balloon, PCI, vfio-user:PATH). Read the region with `virtioctl stats PATH`.")

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
            let spec = try device.spec(), open = try device.openOptions()
            try DeviceOpening.open(spec, options: open, Run(command: self, spec: spec, open: open, load: loadSpec))
        }

        /// The owner loop's options from the flags.
        func ownerOptions() -> OwnerOptions {
            var o = OwnerOptions()
            o.statsFile = statsFile
            o.intervalMilliseconds = intervalMs
            o.deadline = duration.map { monotonicNanoseconds() + UInt64($0 * 1e9) }
            o.shouldStop = { attachStop.load(ordering: .acquiring) }
            o.note = { note("virtioctl: \($0)") }
            return o
        }

        /// Attach on whatever transport was opened: the balloon loop or the block loop.
        struct Run: TransportUser {
            let command: Attach
            let spec: DeviceSpec
            let open: OpenOptions
            let load: LoadSpec?

            func run<T: VirtioTransport>(_ t: T, soft: SoftFunction?) throws {
                var owner = command.ownerOptions()
                // A software device also asks for statistics on its own clock.
                if let soft {
                    owner.askSoftDevice = { soft.requestStatistics() }
                    owner.softIntervalMilliseconds = soft.statisticsInterval
                }
                if t.deviceType == .balloon {
                    guard load == nil else { throw CLIError("--load needs a block device; \(t.name) is a balloon") }
                    let balloon = try BalloonDevice(transport: t, policy: try open.policy(for: .balloon), logger: open.logger)
                    try DeviceOwner.own(balloon: balloon, owner)
                    return
                }
                let attach = try open.blockAttachOptions(for: spec, draftStatsQueue: command.blkStatsVq)
                try DeviceOwner.own(block: try BlockDevice(transport: t, options: attach, logger: open.logger), load: load, owner)
            }
        }
    }
}
