import Synchronization
import VirtioCore
import VirtioDrivers
import VirtioSoftDevice

/// Something to do with an attached block device, whatever transport it sits on.
public protocol BlockDeviceUser {
    associatedtype Result
    func run<T: VirtioTransport>(_ device: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> Result
}

extension DeviceOpening {
    /// Opens `spec`, attaches the block driver with the common options, and hands it to `user`.
    /// The device is reset when `user` returns; a software device's conformance findings go to `options.warn`.
    @inlinable
    public static func withBlockDevice<U: BlockDeviceUser>(_ spec: DeviceSpec, options: OpenOptions,
                                                           draftStatsQueue: Bool = false, _ user: U) throws -> U.Result {
        let attach = try options.blockAttachOptions(for: spec, draftStatsQueue: draftStatsQueue)
        return try open(spec, options: options, BlockAttach(user: user, attach: attach, options: options))
    }
}

extension OpenOptions {
    /// The block driver's attach options from the common ones. A soft:blk spelled with
    /// stats_vq=on has told both sides already, so the draft statistics queue is accepted then.
    public func blockAttachOptions(for spec: DeviceSpec, draftStatsQueue: Bool = false) throws(AttachError) -> BlockAttachOptions {
        var attach = BlockAttachOptions()
        attach.policy = try policy(for: .block)
        attach.queues = queues
        attach.queueSize = queueSize
        attach.interrupts = interrupts
        attach.draftStatsQueue = draftStatsQueue || spec.softBlockOptions?.statsQueue == true
        return attach
    }
}

/// The transport-level step of `withBlockDevice`: the block driver on whatever was opened.
@usableFromInline
struct BlockAttach<U: BlockDeviceUser>: TransportUser {
    @usableFromInline let user: U
    @usableFromInline let attach: BlockAttachOptions
    @usableFromInline let options: OpenOptions

    @inlinable
    init(user: U, attach: BlockAttachOptions, options: OpenOptions) {
        self.user = user
        self.attach = attach
        self.options = options
    }

    @inlinable
    func run<T: VirtioTransport>(_ transport: T, soft: SoftFunction?) throws -> U.Result {
        // Any balloon (software, PCI, vfio-user) gets the hint; other classes BlockDevice refuses itself.
        if transport.deviceType == .net {
            throw AttachError.wrongDeviceClass(device: transport.name, is: "virtio-net device",
                                               verb: "this verb drives block devices (use `virtioctl net info` or `virtioctl net fwd`)")
        }
        if transport.deviceType == .balloon {
            throw AttachError.wrongDeviceClass(device: transport.name, is: "virtio-balloon",
                                               verb: "this verb drives block devices (use `virtioctl attach` for a balloon)")
        }
        let device = try BlockDevice(transport: transport, options: attach, logger: options.logger)
        let function = soft?.block
        if let failure = function?.failure.withLock({ $0 }) { throw AttachError.softDeviceFailed(failure) }
        let result = try user.run(device, soft: function)
        // The software device checks the driver against the spec; a rule broken is a driver bug.
        for v in soft?.violations ?? [] { options.warn("soft:blk saw a driver conformance violation: \(v)") }
        return result
    }
}

extension DeviceSpec {
    /// The `soft:blk` options, when this is one (verbs that need a software disk check it).
    public var softBlockOptions: SoftBlockOptions? {
        if case let .softBlock(o) = self { o } else { nil }
    }

    /// Whether the spelling is an in-process software device (scratch: free to write).
    public var isSoftware: Bool {
        switch self {
        case .softBlock, .softBalloon, .softNet: true
        case .pci, .vfioUser, .vhostUser: false
        }
    }
}
