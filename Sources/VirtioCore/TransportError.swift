/// Why a transport could not reach or use the device's registers: which device, what went
/// wrong, and what was underneath (the PCI backend's or socket peer's own error, as it reads).
public struct TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// How a person names the device (`soft:blk`, `0000:00:04.0`, `vfio-user:PATH`).
    public let device: String
    public let problem: Problem

    public init(_ device: String, _ problem: Problem) {
        self.device = device
        self.problem = problem
    }

    /// What went wrong.
    public enum Problem: Sendable, Equatable {
        /// The transport's own structures (PCI capabilities) are unusable.
        case layout(TransportCause)
        /// Configuration space could not be read or written.
        case configSpace(TransportCause)
        /// A register access the backend refused or could not carry (a dead peer, an I/O error).
        case registerAccess(write: Bool, TransportCause)
        /// An access of a width the registers do not take.
        case accessWidth(Int)
        /// An access past the end of a register window.
        case outsideWindow(write: Bool, offset: Int, window: Int)
        case doorbellOutsideWindow(queue: Int, offset: Int, width: Int, window: Int)
        case doorbellMisaligned(queue: Int)
        case noDeviceConfig
        /// MSI-X vectors could not be enabled.
        case interrupts(TransportCause)
        /// The common window is too short for admin_queue_index / admin_queue_num.
        case noAdminQueueFields(window: Int)
        case adminQueueNumZero
        case adminQueuesOverlap(first: Int, count: Int, regular: Int)
        case sriovCapability(TransportCause)
        /// A socket peer that is the device (a vhost-user backend) failed, refused or broke the protocol.
        case peer(TransportCause)
    }

    public var description: String {
        let detail: String
        switch problem {
        case let .layout(why): detail = "\(why)"
        case let .configSpace(why): detail = "PCI configuration space: \(why)"
        case let .registerAccess(write, why): detail = "register \(write ? "write" : "read"): \(why)"
        case let .accessWidth(w): detail = "register access width \(w) (1, 2 or 4 only)"
        case let .outsideWindow(write, offset, window):
            detail = "\(write ? "write" : "read") at 0x\(String(offset, radix: 16)) outside a \(window)-byte window"
        case let .doorbellOutsideWindow(q, offset, width, window):
            detail = "queue \(q) doorbell at notify offset \(offset) (+\(width)) is outside the \(window)-byte notify window"
        case let .doorbellMisaligned(q):
            detail = "queue \(q) doorbell is not 4-byte aligned, but VIRTIO_F_NOTIFICATION_DATA needs 32-bit writes"
        case .noDeviceConfig: detail = "the device has no device-specific configuration"
        case let .interrupts(why): detail = "\(why)"
        case let .noAdminQueueFields(window):
            detail = "the common configuration window (\(window) bytes) has no admin queue fields"
        case .adminQueueNumZero: detail = "VIRTIO_F_ADMIN_VQ negotiated but admin_queue_num reads 0"
        case let .adminQueuesOverlap(first, count, regular):
            detail = "admin_queue_index \(first) (num \(count)) overlaps the \(regular) regular queues"
        case let .sriovCapability(why): detail = "SR-IOV capability: \(why)"
        case let .peer(why): detail = "\(why)"
        }
        // A peer's own error usually names its socket already; say the device once.
        let bare = device.split(separator: ":", maxSplits: 1).last.map(String.init) ?? device
        return detail.contains(device) || (bare.hasPrefix("/") && detail.contains(bare)) ? detail : "\(device): \(detail)"
    }
}

/// The error of the layer under a transport (a capability walk's, the PCI backend's, a socket
/// peer's), kept as the value it was thrown as: a caller can still ask `error as? CapabilityError`.
public struct TransportCause: Sendable, Equatable, CustomStringConvertible {
    public let error: any Error & Sendable

    public init(_ error: any Error & Sendable) { self.error = error }

    public var description: String { "\(error)" }

    /// Two causes are the same when they read the same (the underlying types are not all Equatable).
    public static func == (a: TransportCause, b: TransportCause) -> Bool { a.description == b.description }
}
