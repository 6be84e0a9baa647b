import VirtioCore
import VirtioRing

/// A rule a virtio-net device broke, seen by the driver (digest §10). The queue it happened on
/// is broken from then on: nothing more is read from it and no frame is handed out twice.
public enum NetViolation: Error, Sendable, Equatable, CustomStringConvertible {
    case shortFrame(queue: Int, length: UInt32)
    case numBuffersOutOfRange(queue: Int, numBuffers: UInt16, posted: Int)
    case mergedFrameTooLong(queue: Int, bytes: Int, limit: Int)
    case headerFlagsWithoutFeature(queue: Int, flags: UInt8, gsoType: UInt8)
    case controlAck(UInt8)
    case controlAckNotWritten(usedLength: UInt32)
    case configChangedSilently(field: String, was: String, now: String)

    /// The clause broken, in words.
    public var rule: String {
        switch self {
        case .shortFrame: "net Device Operation / Processing of Incoming Packets: a received buffer holds at least the 12-byte header and a 14-byte Ethernet header"
        case .numBuffersOutOfRange: "net Device Operation / Setting Up Receive Buffers: with VIRTIO_NET_F_MRG_RXBUF num_buffers is 1 or more and counts buffers the driver posted"
        case .mergedFrameTooLong: "net Device Operation: a merged packet is no longer than the largest packet the driver can receive"
        case .headerFlagsWithoutFeature: "net Device Operation / Processing of Incoming Packets: without GUEST_CSUM flags is 0, and gso_type is NONE unless a GUEST_* GSO feature was negotiated"
        case .controlAck: "net Control Virtqueue: the device writes ack VIRTIO_NET_OK (0) or VIRTIO_NET_ERR (1)"
        case .controlAckNotWritten: "net Control Virtqueue: the device writes the ack byte into the device-writable part"
        case .configChangedSilently: "Device Configuration Space: a field that changes moves config_generation"
        }
    }

    public var description: String {
        let what: String
        switch self {
        case let .shortFrame(q, len): what = "receive queue \(q): used length \(len) is shorter than header + Ethernet header (26)"
        case let .numBuffersOutOfRange(q, n, posted): what = "receive queue \(q): num_buffers \(n), with \(posted) buffer(s) posted"
        case let .mergedFrameTooLong(q, b, l): what = "receive queue \(q): merged frame of \(b) bytes, past the \(l)-byte limit"
        case let .headerFlagsWithoutFeature(q, f, g): what = "receive queue \(q): header flags 0x\(String(f, radix: 16)), gso_type \(g) without the feature"
        case let .controlAck(a): what = "control ack 0x\(String(a, radix: 16))"
        case let .controlAckNotWritten(len): what = "control command returned with used length \(len) and the ack byte unwritten"
        case let .configChangedSilently(f, was, now): what = "config \(f) changed from \(was) to \(now) with config_generation unchanged"
        }
        return "\(what): \(rule)"
    }
}

/// Why a net attach, command or burst failed; each case says what to change.
public enum NetError: Error, Sendable, Equatable, CustomStringConvertible {
    case wrongDeviceType(String)
    case invalidConfig(String)
    case invalidRequest(String)
    case queuePairs(asked: Int, available: Int)
    case notNegotiated(String)
    case commandRefused(String)
    case timeout(milliseconds: Int, what: String)
    case frameTooLong(length: Int, limit: Int)
    case violation(NetViolation)
    case virtio(VirtioError)

    public var description: String {
        switch self {
        case let .wrongDeviceType(why): why
        case let .invalidConfig(why): "device config: \(why)"
        case let .invalidRequest(why): why
        case let .queuePairs(asked, n): "asked for \(asked) queue pair(s); the device offers 1...\(n)"
        case let .notNegotiated(what): "\(what) was not negotiated with this device"
        case let .commandRefused(what): "the device answered VIRTIO_NET_ERR to \(what)"
        case let .timeout(ms, what): "no answer within \(ms) ms to \(what)"
        case let .frameTooLong(len, limit): "a frame of \(len) bytes is longer than the \(limit) bytes this device takes (MTU + 14)"
        case let .violation(v): "the device broke the protocol: \(v)"
        case let .virtio(e): e.description
        }
    }

    /// Wraps a ring error of `queue`.
    @inlinable
    public static func ring(_ queue: Int, _ e: RingError) -> NetError { .virtio(.ring(queue: queue, e)) }
}
