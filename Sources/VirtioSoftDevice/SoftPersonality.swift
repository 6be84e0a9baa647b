import VirtioCore
import VirtioRing
import VirtioWire

/// What a device-type personality does with one request.
public enum RequestOutcome: Sendable, Equatable {
    /// Done: return the buffer with this many bytes written.
    case used(UInt32)
    /// The request breaks the device type's framing rules: the device needs a reset.
    case malformed(String)
    /// Fault injection: the device keeps the buffer and never returns it.
    case held
    /// A statistics queue: the device keeps the buffer and returns it when it wants fresh numbers.
    case keep
}

/// A device type behind the software PCI function (blk now; balloon later).
public protocol SoftPersonality: AnyObject, Sendable {
    var deviceType: VirtioDeviceType { get }
    var queueCount: Int { get }
    var maxQueueSize: Int { get }
    /// Device-type feature bits offered.
    var deviceFeatures: FeatureSet { get }
    /// The device-specific configuration structure, little-endian.
    func configBytes() -> [UInt8]
    /// Serves one request popped from `queue`.
    func handle(queue: Int, chain: AvailableChain, elements: UnsafeMutableBufferPointer<ChainElement>,
                memory: DMAArena, negotiated: FeatureSet) -> RequestOutcome
    /// The device-driven statistics queue, if this personality has one.
    var statisticsQueue: Int? { get }
    var statisticsSink: SoftStatsSink? { get }
    /// Queues a vhost-user frontend drives (the rest need PCI registers or the frontend serves them).
    var vhostQueueCount: Int { get }
    /// GET_QUEUE_NUM's answer: virtqueues for blk (qemu-storage-daemon's unit), queue pairs for net (DPDK's and QEMU's).
    var vhostQueueNumber: Int { get }
    /// Over vhost-user the frontend keeps the control queue and enables rings pair by pair
    /// (SET_VRING_ENABLE): told which hosted rings run now.
    func hostedRingsChanged(running: (Int) -> Bool)
    /// The driver reset the device: state it changed goes back (before `configBytes` is read again).
    func deviceReset()
    /// A receive queue (net): its buffers wait for frames instead of being served as requests.
    func isReceiveQueue(_ queue: Int) -> Bool
    /// A frame the device itself originates on receive queue `queue` now (a traffic source), written
    /// into `buffer`; nil when it has none to send yet.
    func originate(queue: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int?
}

extension SoftPersonality {
    public var statisticsQueue: Int? { nil }
    public var statisticsSink: SoftStatsSink? { nil }
    public func deviceReset() {}
    public var vhostQueueCount: Int { statisticsQueue ?? queueCount }
    public var vhostQueueNumber: Int { vhostQueueCount }
    public func hostedRingsChanged(running: (Int) -> Bool) {}
    public func isReceiveQueue(_ queue: Int) -> Bool { false }
    public func originate(queue: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int? { nil }
}
