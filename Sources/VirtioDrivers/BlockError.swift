import VirtioCore
import VirtioRing

/// Why a block request or attach failed; every case says what to change.
public enum BlockError: Error, Sendable, Equatable, CustomStringConvertible {
    case outOfRange(sector: UInt64, sectors: UInt64, capacity: UInt64)
    case misaligned(what: String, value: UInt64, blockSize: UInt32)
    case readOnly
    case notSupported(String)
    case queueFull
    case tooManySegments(needed: Int, maximum: Int)
    case ioError(sector: UInt64)
    case deviceUnsupported(String)
    case invalidStatus(UInt8)
    case statusNotWritten(usedLength: UInt32)
    case timeout(milliseconds: Int, what: String)
    case noSuchQueue(Int, available: Int)
    case queueCount(asked: Int, available: Int)
    case wrongDeviceType(String)
    case queueResetFailed(queue: Int, VirtioError)
    case invalidConfig(String)
    case invalidRequest(String)
    case virtio(VirtioError)

    public var description: String {
        switch self {
        case let .outOfRange(s, n, cap):
            "sectors \(s)..<\(s &+ n) are past the end of the device (\(cap) sectors of 512 bytes)"
        case let .misaligned(what, v, bs):
            "\(what) \(v) is not a multiple of the \(bs)-byte logical block size"
        case .readOnly: "the device is read-only (VIRTIO_BLK_F_RO)"
        case let .notSupported(what): "\(what) was not negotiated with this device"
        case .queueFull: "the queue is full; reap completions first"
        case let .tooManySegments(n, m): "request needs \(n) data segments, the device takes at most \(m) (seg_max)"
        case let .ioError(s): "the device reported an I/O error (VIRTIO_BLK_S_IOERR) for the request at sector \(s)"
        case let .deviceUnsupported(what): "the device answered VIRTIO_BLK_S_UNSUPP to \(what)"
        case let .invalidStatus(b): "the device wrote status byte \(b), which is not OK, IOERR or UNSUPP"
        case let .statusNotWritten(len): "the device returned a request (used length \(len)) without writing its status byte"
        case let .timeout(ms, what): "no completion within \(ms) ms for \(what); the request is still owned by the device"
        case let .noSuchQueue(q, n): "queue \(q) does not exist (this device has \(n) request queue(s))"
        case let .queueCount(asked, n): "asked for \(asked) request queue(s); the device offers 1...\(n)"
        case let .wrongDeviceType(why): why
        case let .queueResetFailed(q, e): "queue \(q) reset failed, the device is marked FAILED: \(e)"
        case let .invalidConfig(why): "device config: \(why)"
        case let .invalidRequest(why): why
        case let .virtio(e): e.description
        }
    }
}
