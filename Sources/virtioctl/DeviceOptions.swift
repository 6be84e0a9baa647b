import ArgumentParser
import Logging
import VFIO
import VirtioAttach
import VirtioCore
import VirtioDrivers
import VirtioSoftDevice

/// The CLI's logger: stderr, debug steps with -v.
func cliLogger(verbose: Bool) -> Logger {
    var l = Logger(label: "virtioctl") { StreamLogHandler.standardError(label: $0) }
    l.logLevel = verbose ? .debug : .warning
    return l
}

/// The DEVICE argument and the attach options every device verb shares.
struct DeviceOptions: ParsableArguments {
    @Argument(help: ArgumentHelp("The device: \(DeviceSpec.syntax).",
                                 discussion: "soft:blk keys: " + SoftBlockOptions.keys.map(\.0).joined(separator: ", ")))
    var device: String

    @Option(name: .customLong("feature-off"),
            help: "Never negotiate this feature (name like RING_PACKED or VIRTIO_BLK_F_FLUSH, or a bit number); repeat or comma-separate.")
    var featureOff: [String] = []

    @Option(name: .customLong("require"), help: "Fail unless this feature is negotiated; repeat or comma-separate.")
    var require: [String] = []

    @Option(help: "Request queues to use (default: all the device offers).")
    var queues: Int?

    @Option(help: "Queue size to ask for (default: the device's maximum).")
    var queueSize: Int?

    @Option(name: [.short, .long], help: "Output format: normal or json.")
    var output: OutputFormat = .normal

    @Flag(name: .shortAndLong, help: "Log each initialisation step to stderr.")
    var verbose = false

    @Option(help: "Completion mode: poll (busy-poll the used ring) or msix (sleep on MSI-X eventfds).")
    var interrupts: InterruptMode = .poll

    @OptionGroup var transport: TransportOptions

    func validate() throws {
        if let queues, !(1...64).contains(queues) { throw ValidationError("--queues must be in 1...64") }
        if let queueSize, !(1...32768).contains(queueSize) { throw ValidationError("--queue-size must be in 1...32768") }
    }

    func spec() throws -> DeviceSpec { try DeviceSpec(parsing: device) }

    var logger: Logger { cliLogger(verbose: verbose) }

    /// The common options as device opening takes them.
    func openOptions() throws -> OpenOptions {
        var o = try transport.openOptions(logger: logger)
        o.featureOff = featureOff
        o.require = require
        o.queues = queues
        o.queueSize = queueSize
        o.interrupts = interrupts == .msix
        return o
    }

    /// Attaches the block driver to DEVICE and hands it to `user`. The device is reset when done.
    func withBlockDevice<U: BlockDeviceUser>(_ user: U, draftStatsQueue: Bool = false) throws -> U.Result {
        try DeviceOpening.withBlockDevice(try spec(), options: try openOptions(), draftStatsQueue: draftStatsQueue, user)
    }
}

/// How to reach a device whatever the verb: `--noiommu`, `--dma`, `--peer-timeout` (one definition for every verb).
struct TransportOptions: ParsableArguments {
    @Flag(help: "Accept a device bound in VFIO no-IOMMU mode (no DMA isolation).")
    var noiommu = false

    @Option(help: "DMA memory to map for a PCI, vfio-user or vhost-user device, e.g. 64M.")
    var dma: String = "64M"

    @Option(help: "The VFIO interface for a PCI function: iommufd (/dev/iommu and the device cdev /dev/vfio/devices/vfioN), group (the group and type1 container), or auto: iommufd when the kernel has the cdev.")
    var vfio: VFIOBackend = .auto

    @OptionGroup var peer: PeerTimeoutOption

    /// Device opening's options from these flags (more set by the verb).
    func openOptions(logger: Logger) throws -> OpenOptions {
        var o = OpenOptions(logger: logger)
        o.noIOMMU = noiommu
        o.vfioBackend = vfio
        try o.setDMA(dma)
        o.peerTimeoutMilliseconds = peer.milliseconds
        o.warn = { note("virtioctl: warning: \($0)") }
        return o
    }
}

/// `--peer-timeout MS`, for verbs that can reach a device through a socket peer.
struct PeerTimeoutOption: ParsableArguments {
    @Option(name: .customLong("peer-timeout"),
            help: "How long to wait for a socket peer's reply (vfio-user, vhost-user), in milliseconds (default 5000); past it the peer is taken for gone.")
    var milliseconds: Int?

    func validate() throws {
        if let milliseconds, !peerTimeoutRange.contains(milliseconds) {
            throw ValidationError("--peer-timeout must be in \(peerTimeoutRange) ms")
        }
    }
}

/// An error the CLI reports as-is on stderr, exiting non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension VFIOBackend: ExpressibleByArgument {}
