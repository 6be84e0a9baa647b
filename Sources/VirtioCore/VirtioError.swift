import VirtioRing

/// Why a virtio device could not be brought up or stopped working; each case says what to do.
public enum VirtioError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The device does not offer VIRTIO_F_VERSION_1: a legacy-only device this driver does not drive.
    case legacyDevice
    case requiredFeatureNotOffered([String])
    case requiredFeatureUnsupported([String])
    case featureRequiredAndForcedOff([String])
    case version1ForcedOff
    /// FEATURES_OK did not stick: the device rejected the subset.
    case featuresRejected([String])
    case resetTimeout(status: UInt8)
    case queueResetTimeout(queue: Int)
    /// queue_reset read 0 but queue_enable still reads 1: the reset is not done, whatever the device says.
    case queueStillEnabled(queue: Int)
    case deviceNeedsReset
    /// device_status reads 0xFF: the function is gone (surprise removal), every read returns all ones.
    case deviceGone
    case deviceFailed(status: UInt8)
    case noSuchQueue(queue: Int, available: Int)
    case queueUnavailable(queue: Int)
    case invalidQueueSize(queue: Int, size: Int, maximum: Int, packed: Bool)
    case queueAlreadyEnabled(queue: Int)
    case featureNotNegotiated(String)
    case configUnstable(attempts: Int)
    case configOutOfRange(offset: Int, width: Int, length: Int)
    case dma(DMAError)
    case transport(TransportError)
    /// The device is not of the class the driver drives.
    case wrongDeviceType(device: String, expected: String, found: String)
    /// Statistics queue protocol: one buffer at a time, and the device returns the one it holds.
    case statsBufferOutstanding(queue: Int)
    case statsWrongBuffer(queue: Int, token: UInt16)
    case ring(queue: Int, RingError)

    public var description: String {
        switch self {
        case .legacyDevice:
            "device does not offer VIRTIO_F_VERSION_1 (a legacy-only device); this driver speaks virtio 1.x only"
        case let .requiredFeatureNotOffered(n):
            "required feature(s) not offered by the device: \(n.joined(separator: ", "))"
        case let .requiredFeatureUnsupported(n):
            "required feature(s) this driver cannot use: \(n.joined(separator: ", "))"
        case let .featureRequiredAndForcedOff(n):
            "feature(s) both required and forced off: \(n.joined(separator: ", "))"
        case .version1ForcedOff:
            "VIRTIO_F_VERSION_1 cannot be forced off: this driver speaks virtio 1.x only"
        case let .featuresRejected(n):
            "device rejected the feature subset (FEATURES_OK did not stick; status set to FAILED): \(n.joined(separator: ", "))"
        case let .resetTimeout(s):
            "device did not finish reset: device_status still reads 0x\(String(s, radix: 16)) after the wait"
        case let .queueResetTimeout(q):
            "queue \(q) did not finish its reset: queue_reset still reads 1 after the wait"
        case let .queueStillEnabled(q):
            "queue \(q) did not finish its reset: queue_reset reads 0 but queue_enable still reads 1 (a reset queue reads 0 in both)"
        case .deviceGone:
            "device_status reads 0xFF: the device is gone (surprise removal or a dead link); nothing it returns can be trusted"
        case .deviceNeedsReset:
            "device set DEVICE_NEEDS_RESET: it hit an error it cannot recover from; reset and re-attach"
        case let .deviceFailed(s):
            "device is in a failed state (status 0x\(String(s, radix: 16)))"
        case let .noSuchQueue(q, n):
            "queue \(q) does not exist: the device has \(n) queue(s)"
        case let .queueUnavailable(q):
            "queue \(q) is unavailable: its queue_size reads 0"
        case let .invalidQueueSize(q, s, m, packed):
            "queue \(q): size \(s) is invalid (maximum \(m)\(packed ? "" : ", split rings need a power of two"))"
        case let .queueAlreadyEnabled(q):
            "queue \(q) is already set up"
        case let .featureNotNegotiated(n):
            "\(n) was not negotiated"
        case let .configUnstable(a):
            "device config kept changing: config_generation differed across \(a) read attempts"
        case let .configOutOfRange(o, w, l):
            "device config read at \(o) (\(w) bytes) is past its \(l)-byte window"
        case let .dma(e):
            "DMA memory: \(e)"
        case let .transport(e):
            "\(e)"
        case let .wrongDeviceType(device, expected, found):
            "\(device) is a virtio \(found) device, not a \(expected)"
        case let .statsBufferOutstanding(q):
            "statistics queue \(q): a buffer is already with the device"
        case let .statsWrongBuffer(q, token):
            "statistics queue \(q): the device returned buffer \(token), not the one it holds"
        case let .ring(q, e):
            "queue \(q): \(e)"
        }
    }
}
