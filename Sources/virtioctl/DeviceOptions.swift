import ArgumentParser
import Logging
import VFIO
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice

/// The CLI's logger: stderr, debug steps with -v.
func cliLogger(verbose: Bool) -> Logger {
    var l = Logger(label: "virtioctl") { StreamLogHandler.standardError(label: $0) }
    l.logLevel = verbose ? .debug : .warning
    return l
}

/// Something to do with an attached block device, whatever transport it sits on.
protocol BlockDeviceUser {
    associatedtype Result
    func run<T: VirtioTransport>(_ device: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> Result
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

    @Flag(help: "Accept a device bound in VFIO no-IOMMU mode (no DMA isolation).")
    var noiommu = false

    @Option(help: "DMA memory to map for a PCI device, e.g. 64M.")
    var dma: String = "64M"

    @Option(help: "Completion mode: poll (busy-poll the used ring) or msix (sleep on MSI-X eventfds).")
    var interrupts: InterruptMode = .poll

    @OptionGroup var peer: PeerTimeoutOption
    var peerTimeout: Int? { peer.milliseconds }

    func validate() throws {
        if let queues, !(1...64).contains(queues) { throw ValidationError("--queues must be in 1...64") }
        if let queueSize, !(1...32768).contains(queueSize) { throw ValidationError("--queue-size must be in 1...32768") }
    }

    func spec() throws -> DeviceSpec { try DeviceSpec(parsing: device) }

    /// Turns --feature-off / --require names into a policy; unknown names are an error listing the known ones.
    func policy(for type: VirtioDeviceType) throws -> FeaturePolicy {
        func parse(_ list: [String], _ flag: String) throws -> FeatureSet {
            var set = FeatureSet()
            for name in list.flatMap({ $0.split(separator: ",").map(String.init) }) where !name.isEmpty {
                guard let bit = FeatureNames.parse(name, deviceType: type) else {
                    throw CLIError("\(flag): unknown feature '\(name)'; known for \(type): "
                        + FeatureNames.known(deviceType: type).joined(separator: ", ") + " (or a bit number 0-63)")
                }
                set.insert(bit)
            }
            return set
        }
        return FeaturePolicy(forcedOff: try parse(featureOff, "--feature-off"), required: try parse(require, "--require"))
    }

    var logger: Logger { cliLogger(verbose: verbose) }

    /// Attaches the block driver to DEVICE and hands it to `user`. The device is reset when done.
    func withBlockDevice<U: BlockDeviceUser>(_ user: U) throws -> U.Result {
        var attach = BlockAttachOptions()
        attach.policy = try policy(for: .block)
        attach.queues = queues
        attach.queueSize = queueSize
        attach.interrupts = interrupts == .msix
        switch try spec() {
        case let .softBlock(options):
            let function = try SoftPCIFunction.block(options)
            let transport = try PCITransport(function: function, logger: logger)
            let device = try BlockDevice(transport: transport, options: attach, logger: logger)
            if let failure = function.failure.withLock({ $0 }) { throw CLIError("soft:blk failed: \(failure)") }
            let result = try user.run(device, soft: function)
            // The software device checks the driver against the spec; a rule broken is a driver bug.
            for v in function.log.violations { note("virtioctl: warning: soft:blk saw a driver conformance violation: \(v)") }
            return result
        case let .pci(address):
            let function = try openVFIO(address: address, dma: dma, noiommu: noiommu)
            let transport = try PCITransport(function: function, logger: logger)
            let device = try BlockDevice(transport: transport, options: attach, logger: logger)
            return try user.run(device, soft: nil)
        case .softBalloon:
            throw CLIError("\(device) is a virtio-balloon; this verb drives block devices (use `virtioctl attach` for a balloon)")
        case let .vfioUser(spec):
            let transport = try openVFIOUser(spec, dma: dma, peerTimeout: peerTimeout, logger: logger)
            let device = try BlockDevice(transport: transport, options: attach, logger: logger)
            return try user.run(device, soft: nil)
        }
    }
}
