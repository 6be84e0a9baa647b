import VirtioCore
import VirtioRing

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
}

extension SoftPersonality {
    public var statisticsQueue: Int? { nil }
    public var statisticsSink: SoftStatsSink? { nil }
}
