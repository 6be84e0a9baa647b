import VirtioCore
import VirtioDrivers
import VirtioSoftDevice

/// Something to do with an attached net device, whatever transport it sits on.
public protocol NetDeviceUser {
    associatedtype Result
    func run<T: VirtioTransport>(_ device: NetDevice<T>, soft: SoftPCIFunction<SoftNet>?) throws -> Result
}

extension DeviceOpening {
    /// Opens `spec`, attaches the net driver, and hands it to `user`; the device is reset when
    /// `user` returns. A soft:net's conformance findings go to `options.warn`.
    @inlinable
    public static func withNetDevice<U: NetDeviceUser>(_ spec: DeviceSpec, options: OpenOptions, attach: NetAttachOptions,
                                                       _ user: U) throws -> U.Result {
        try open(spec, options: options, NetAttach(user: user, attach: attach, options: options))
    }
}

extension OpenOptions {
    /// The net driver's attach options from the common ones (`--queues` are queue pairs here).
    public func netAttachOptions() throws(AttachError) -> NetAttachOptions {
        var a = NetAttachOptions()
        a.policy = try policy(for: .net)
        a.queuePairs = queues
        a.queueSize = queueSize
        a.interrupts = interrupts
        return a
    }
}

/// The transport-level step of `withNetDevice`.
@usableFromInline
struct NetAttach<U: NetDeviceUser>: TransportUser {
    @usableFromInline let user: U
    @usableFromInline let attach: NetAttachOptions
    @usableFromInline let options: OpenOptions

    @inlinable
    init(user: U, attach: NetAttachOptions, options: OpenOptions) {
        self.user = user
        self.attach = attach
        self.options = options
    }

    @inlinable
    func run<T: VirtioTransport>(_ transport: T, soft: SoftFunction?) throws -> U.Result {
        guard transport.deviceType == .net else {
            throw AttachError.wrongDeviceClass(device: transport.name, is: "virtio \(transport.deviceTypeName)",
                                               verb: "`virtioctl net` drives network devices")
        }
        let net = soft?.net
        // A soft:net null source runs on the device's own thread, as a NIC's wire would.
        let poller = net?.personality.options.backend == .null ? net?.startPolling() : nil
        defer { poller?.stop() }
        let device = try NetDevice(transport: transport, options: attach, logger: options.logger)
        let result = try user.run(device, soft: net)
        for v in soft?.violations ?? [] { options.warn("soft:net saw a driver conformance violation: \(v)") }
        return result
    }
}
