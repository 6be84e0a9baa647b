import VirtioRing

/// The three ring areas of a queue, as device addresses.
public struct QueueAddresses: Sendable, Equatable {
    public var descriptors: UInt64
    public var driver: UInt64
    public var device: UInt64
    public init(descriptors: UInt64, driver: UInt64, device: UInt64) {
        self.descriptors = descriptors
        self.driver = driver
        self.device = device
    }
}

/// How to ring one queue's doorbell; the transport computes it at queue set-up.
@frozen
public struct NotifyTarget: @unchecked Sendable {
    /// A doorbell the driver can store to directly (a mapped BAR), or nil when the transport rings it itself.
    public let pointer: UnsafeMutableRawPointer?
    /// Transport-private: where the transport rings it when `pointer` is nil (PCI: BAR << 32 | offset;
    /// a vhost-user frontend: the queue's kick eventfd).
    public let location: UInt64
    /// The 16-bit value written: the queue index, or queue_notif_config_data with feature 39.
    public let value16: UInt16
    /// VIRTIO_F_NOTIFICATION_DATA (38): a 32-bit write carrying the next available position.
    public let withData: Bool
    public init(pointer: UnsafeMutableRawPointer?, location: UInt64, value16: UInt16, withData: Bool) {
        self.pointer = pointer
        self.location = location
        self.value16 = value16
        self.withData = withData
    }
}

/// What the transport set up for a queue.
public struct QueueSetup: Sendable {
    public let notify: NotifyTarget
    /// The MSI-X vector the device accepted, or nil (none asked, or it read back NO_VECTOR).
    public let vector: UInt16?
    public init(notify: NotifyTarget, vector: UInt16?) {
        self.notify = notify
        self.vector = vector
    }
}

/// One way of reaching a virtio device: the PCI transport (over kernel VFIO, vfio-user or the
/// software device) or, next, a vhost-user frontend. Nothing here is PCI's: "vectors" are the
/// transport's interrupt channels (MSI-X vectors, vhost-user call eventfds), each an eventfd.
/// Methods that touch the device throw; `notify` is the hot path and does not.
public protocol VirtioTransport: AnyObject, SendableMetatype {
    /// How a person names the device: `soft:blk`, `0000:00:04.0`.
    var name: String { get }
    var deviceType: VirtioDeviceType? { get }
    /// The raw virtio device ID (meaningful when `deviceType` is nil).
    var deviceID: UInt16 { get }
    /// Where rings and buffers come from: memory the device can reach.
    var dma: any DMAAllocator { get }
    /// Feature bits this transport cannot support on this device (never negotiated).
    var unsupportedFeatures: FeatureSet { get }
    /// The first doorbell write that failed (`notify` cannot throw), for error messages.
    var notifyFailure: String? { get }
    /// Bytes of device-specific configuration.
    var deviceConfigLength: Int { get }

    func readStatus() throws(VirtioError) -> DeviceStatus
    func writeStatus(_ status: DeviceStatus) throws(VirtioError)
    func readDeviceFeatures() throws(VirtioError) -> FeatureSet
    func writeDriverFeatures(_ features: FeatureSet) throws(VirtioError)
    func numQueues() throws(VirtioError) -> Int
    /// queue_size after selecting `queue` (0 when unavailable).
    func queueMaxSize(_ queue: Int) throws(VirtioError) -> Int
    /// Writes size, areas and vector for `queue` (not queue_enable) and computes its doorbell.
    func setUpQueue(_ queue: Int, size: Int, addresses: QueueAddresses, vector: UInt16?,
                    features: FeatureSet) throws(VirtioError) -> QueueSetup
    func enableQueue(_ queue: Int) throws(VirtioError)
    /// VIRTIO_F_RING_RESET: writes queue_reset = 1 and waits until it reads 0.
    func resetQueue(_ queue: Int) throws(VirtioError)
    func configGeneration() throws(VirtioError) -> UInt8
    func readDeviceConfig(offset: Int, width: Int) throws(VirtioError) -> UInt64
    func writeDeviceConfig(offset: Int, width: Int, value: UInt64) throws(VirtioError)
    /// Rings the doorbell with `value` (16 or 32 bits as `target` says). Never blocks.
    func notify(_ target: NotifyTarget, value: UInt32)

    /// MSI-X vectors the function has (0: none; poll mode only).
    var interruptVectors: Int { get }
    /// Enables vectors 0..<count, each signalled through the eventfd at its index (owned by the transport).
    func enableInterrupts(count: Int) throws(VirtioError) -> [Int32]
    /// Turns interrupts off and closes their eventfds.
    func disableInterrupts()
    /// Programs config_msix_vector and reads it back; nil when the device refused it.
    func setConfigVector(_ vector: UInt16) throws(VirtioError) -> UInt16?

    /// VIRTIO_F_ADMIN_VQ: the admin queues' indices (PCI: admin_queue_index and admin_queue_num).
    /// Call only when bit 41 is negotiated; a transport that cannot say never offers 41
    /// (`transport-pci.tex`: a common window too short for those fields).
    func adminQueueRange() throws(VirtioError) -> Range<Int>
}

extension VirtioTransport {
    /// The device's type as a person reads it: `blk`, `balloon`, or `device 7` for one this project does not know.
    public var deviceTypeName: String { deviceType.map { "\($0)" } ?? "device \(deviceID)" }
}

/// A transport whose device can own SR-IOV members (a PCI physical function): the admin SR-IOV group needs it.
public protocol SRIOVOwner {
    /// The SR-IOV state of an owner function (NumVFs, VF Enable); nil without an SR-IOV capability.
    func sriovState() throws(VirtioError) -> SRIOVState?
}

/// What the PCI SR-IOV extended capability of an owner (PF) says about its members.
public struct SRIOVState: Sendable, Equatable {
    public let totalVFs: Int
    public let numVFs: Int
    public let vfEnable: Bool
    /// "VF Migration Capable": the admin spec wants it clear while commands are outstanding.
    public let vfMigrationCapable: Bool
    public init(totalVFs: Int, numVFs: Int, vfEnable: Bool, vfMigrationCapable: Bool) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.vfEnable = vfEnable
        self.vfMigrationCapable = vfMigrationCapable
    }
}

/// Transports that can describe how they reach the device (for `virtioctl info`).
public protocol TransportDescribing {
    /// Ordered key/value facts: capability windows, MSI-X, backend.
    var transportDetails: [(String, String)] { get }
}
