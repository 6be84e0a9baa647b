import Logging
import VFIO
import VFIOUser
import VhostUser
import VirtioCore
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

/// The options every verb that opens a device shares (`--noiommu`, `--dma`, `--interrupts`,
/// `--feature-off`, `--require`, `--queues`, `--queue-size`, `--peer-timeout`), checked once here.
public struct OpenOptions: Sendable {
    /// Accept a function bound in VFIO no-IOMMU mode.
    public var noIOMMU = false
    /// Which VFIO interface opens a PCI function (`--vfio`).
    public var vfioBackend: VFIOBackend = .auto
    /// DMA memory for a PCI or vfio-user device.
    public var dmaBytes = 64 << 20
    /// How long a socket peer may take to answer; nil: the spelling's `timeout=`, else 5 s.
    public var peerTimeoutMilliseconds: Int?
    /// Feature names or bit numbers never to negotiate / to insist on.
    public var featureOff: [String] = []
    public var require: [String] = []
    public var queues: Int?
    public var queueSize: Int?
    /// Sleep on MSI-X eventfds instead of busy-polling.
    public var interrupts = false
    public var logger: Logger
    /// Where notes about the device go (a software device's conformance findings); stderr in the CLI.
    public var warn: @Sendable (String) -> Void = { _ in }

    public init(logger: Logger) { self.logger = logger }

    /// `--dma TEXT` (1M to 16G).
    public mutating func setDMA(_ text: String) throws(AttachError) {
        guard let bytes = parseByteSize(text), bytes >= 1 << 20, bytes <= 1 << 34 else {
            throw .option("--dma \(text): expected 1M to 16G")
        }
        dmaBytes = Int(bytes)
    }

    /// `--feature-off` / `--require` as a policy for `type`; an unknown name lists the known ones.
    public func policy(for type: VirtioDeviceType) throws(AttachError) -> FeaturePolicy {
        func parse(_ list: [String], _ flag: String) throws(AttachError) -> FeatureSet {
            var set = FeatureSet()
            for name in list.flatMap({ $0.split(separator: ",").map(String.init) }) where !name.isEmpty {
                guard let bit = FeatureNames.parse(name, deviceType: type) else {
                    throw .unknownFeature(flag: flag, name: name, deviceType: "\(type)", known: FeatureNames.known(deviceType: type))
                }
                set.insert(bit)
            }
            return set
        }
        return FeaturePolicy(forcedOff: try parse(featureOff, "--feature-off"), required: try parse(require, "--require"))
    }
}

/// The software function behind a `soft:` spelling, for verbs that look inside it (its log, its disk).
public enum SoftFunction {
    case block(SoftPCIFunction<SoftBlock>)
    case balloon(SoftPCIFunction<SoftBalloon>)
    case net(SoftPCIFunction<SoftNet>)

    /// Driver conformance violations the device saw (its own queues and, for an owner, its admin queue).
    public var violations: [String] {
        switch self {
        case let .block(f): (f.log.violations + (f.admin?.log.violations ?? [])).map { "\($0)" }
        case let .balloon(f): f.log.violations.map { "\($0)" }
        case let .net(f): f.log.violations.map { "\($0)" }
        }
    }

    /// Every violation seen, including those only counted (the log keeps a few of each rule).
    public var violationTotal: Int {
        switch self {
        case let .block(f): f.log.violationTotal + (f.admin?.log.violationTotal ?? 0)
        case let .balloon(f): f.log.violationTotal
        case let .net(f): f.log.violationTotal
        }
    }

    public var block: SoftPCIFunction<SoftBlock>? {
        if case let .block(f) = self { f } else { nil }
    }

    public var net: SoftPCIFunction<SoftNet>? {
        if case let .net(f) = self { f } else { nil }
    }

    /// How often the device asks for statistics on its own (`stats_interval`, ms; 0: only when asked).
    public var statisticsInterval: Int {
        switch self {
        case let .block(f): f.personality.options.statsInterval
        case let .balloon(f): f.personality.options.statsInterval
        case .net: 0
        }
    }

    /// The device asks for statistics now (returns the buffer it holds, if any).
    public func requestStatistics() {
        switch self {
        case let .block(f): f.requestStatistics()
        case let .balloon(f): f.requestStatistics()
        case .net: break
        }
    }
}

/// A verb's work on an opened transport. Generic, so whatever the transport, the verb's hot
/// path is specialised for it (no existential between the driver and the doorbell).
public protocol TransportUser {
    associatedtype Result
    func run<T: VirtioTransport>(_ transport: T, soft: SoftFunction?) throws -> Result
}

/// Device opening: the one place a device spelling becomes a transport. Adding a transport is a
/// case of `DeviceSpec` and a branch here; no verb changes.
public enum DeviceOpening {
    /// Opens `spec`, hands the transport to `user`, and returns what it returns. The transport is
    /// released when `user` returns (its device reset by whoever initialised it).
    /// Inlinable so each verb's call specialises `user` for the concrete transport (the verb's hot path
    /// then calls the ring and the doorbell directly, with no witness table between them).
    @inlinable
    public static func open<U: TransportUser>(_ spec: DeviceSpec, options: OpenOptions, _ user: U) throws -> U.Result {
        switch spec {
        case let .softBlock(o):
            let f = try SoftPCIFunction.block(o)
            return try user.run(try PCITransport(function: f, logger: options.logger), soft: .block(f))
        case let .softBalloon(o):
            let f = try SoftPCIFunction.balloon(o)
            return try user.run(try PCITransport(function: f, logger: options.logger), soft: .balloon(f))
        case let .softNet(o):
            guard o.backend != .pair else { throw AttachError.notSupported(pairInProcess) }
            let f = try SoftPCIFunction.net(o)
            return try user.run(try PCITransport(function: f, logger: options.logger), soft: .net(f))
        case let .pci(address):
            let f = try VFIOPCIFunction(address: address, allowNoIOMMU: options.noIOMMU, dmaBytes: options.dmaBytes,
                                        backend: options.vfioBackend)
            return try user.run(try PCITransport(function: f, logger: options.logger), soft: nil)
        case let .vfioUser(s):
            return try user.run(try openVFIOUser(s, options: options), soft: nil)
        case let .vhostUser(s):
            return try user.run(try openVhostUser(s, options: options), soft: nil)
        }
    }

    /// The software function a `soft:` spelling names, to host behind a socket (`softdev serve`).
    public static func softFunction(_ spec: DeviceSpec) throws -> SoftFunction {
        switch spec {
        case let .softBlock(o): .block(try SoftPCIFunction.block(o))
        case let .softBalloon(o): .balloon(try SoftPCIFunction.balloon(o))
        case let .softNet(o):
            if o.backend == .pair { throw AttachError.notSupported(pairInProcess) } else { .net(try SoftPCIFunction.net(o)) }
        case .pci, .vfioUser, .vhostUser: throw AttachError.notSupported("only software devices can be served: soft:blk[,...], soft:net[,...] or soft:balloon[,...]")
        }
    }

    /// Why one spelling cannot name both ends of a pair.
    public static let pairInProcess = "soft:net,backend=pair has two ends: serve them with `virtioctl softdev serve --vhost-user A --vhost-user B soft:net,backend=pair` (each end on its socket), or use backend=loop here"

    /// `vhost-user:PATH`: the frontend, connected and set up to the memory table; the driver does the rest.
    @usableFromInline
    static func openVhostUser(_ spec: VhostUserSpec, options: OpenOptions) throws -> VhostUserFrontend {
        var o = VhostUserFrontendOptions(path: spec.path)
        o.deviceType = spec.deviceType
        o.dmaBytes = options.dmaBytes
        o.timeoutMilliseconds = spec.timeoutMilliseconds ?? options.peerTimeoutMilliseconds ?? o.timeoutMilliseconds
        if let n = spec.maxQueueSize { o.maxQueueSize = n }
        // net: the pairs offered to the driver follow the spelling, else `--queues`.
        if spec.deviceType == .net { o.netPairs = spec.netPairs ?? options.queues.map { max(1, min($0, 128)) } ?? 1 }
        o.mac = spec.mac?.array
        return try VhostUserFrontend(o)
    }

    /// `vfio-user:PATH` for a PCI transport; doorbell writes are posted (no reply awaited).
    /// Replies are awaited for the spelling's `timeout=`, else `--peer-timeout`, else 5 s.
    @usableFromInline
    static func openVFIOUser(_ spec: VFIOUserSpec, options: OpenOptions) throws -> PCITransport<VFIOUserFunction> {
        let timeout = spec.timeoutMilliseconds ?? options.peerTimeoutMilliseconds ?? VFIOUserFunction.defaultTimeoutMilliseconds
        let f = try VFIOUserFunction(path: spec.path, dmaBytes: options.dmaBytes, timeoutMilliseconds: timeout)
        let t = try PCITransport(function: f, logger: options.logger)
        f.postedBAR = t.layout.notify.bar
        f.postedRange = t.layout.notify.offset..<(t.layout.notify.offset + t.layout.notify.length)
        return t
    }
}
