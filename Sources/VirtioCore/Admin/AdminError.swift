import VirtioRing
import VirtioWire

/// Why an admin command was not sent, or what the device answered; each says what to do.
public enum AdminError: Error, Sendable, Equatable, CustomStringConvertible {
    /// VIRTIO_F_ADMIN_VQ was not offered or not negotiated.
    case noAdminQueue(String)
    case setup(VirtioError)
    /// The device answered with a status other than OK.
    case commandFailed(opcode: UInt16, group: UInt16, member: UInt64, status: AdminStatus, qualifier: AdminQualifier)
    /// The opcode is not in the set agreed with LIST_USE for the group: it is never sent.
    case opcodeNotInUse(opcode: UInt16, group: UInt16, inUse: [UInt16])
    /// LIST_QUERY / LIST_USE did not go as the spec requires.
    case handshake(String)
    /// The member id is not one the group has.
    case invalidMember(String)
    case timeout(opcode: UInt16, queue: Int, milliseconds: Int)
    /// The device returned fewer bytes than the 8-byte status.
    case shortStatus(opcode: UInt16, length: UInt32)
    case tooLarge(what: String, bytes: Int, limit: Int)
    case ring(queue: Int, RingError)
    /// An earlier failure left a command with the device; the channel takes no more until reset.
    case channelBroken(String)
    case invalidRequest(String)
    /// The SR-IOV capability is not in the state group commands need (refused before sending).
    case sriovNotReady(String)
    /// A result that does not decode (device parts running short, out of order).
    case malformedResult(WireError)

    public var description: String {
        switch self {
        case let .noAdminQueue(why): why
        case let .setup(e): "admin queue set-up: \(e)"
        case let .commandFailed(op, g, m, s, q):
            "\(Self.name(op)) (group \(AdminGroup(rawValue: g)?.description ?? "\(g)"), member \(m)) failed: status \(s), qualifier \(q)"
                + Self.hint(s, q)
        case let .opcodeNotInUse(op, g, used):
            "\(Self.name(op)) is not in the commands agreed with the device for group \(AdminGroup(rawValue: g)?.description ?? "\(g)") (LIST_USE: \(used.map(Self.name).joined(separator: ", "))); nothing was sent"
        case let .handshake(why): "admin handshake: \(why)"
        case let .invalidMember(why): why
        case let .timeout(op, q, ms):
            "\(Self.name(op)) on admin queue \(q) got no answer in \(ms) ms; the command is still the device's, so this channel takes no more until the device is reset"
        case let .shortStatus(op, len):
            "\(Self.name(op)): the device returned \(len) byte(s), less than the 8-byte status (admin.tex: the device writes status first)"
        case let .tooLarge(what, b, l): "\(what) is \(b) bytes; at most \(l)"
        case let .ring(q, e): "admin queue \(q): \(e)"
        case let .channelBroken(why): "admin channel unusable: \(why)"
        case let .invalidRequest(why): why
        case let .sriovNotReady(why): why
        case let .malformedResult(e): "\(e)"
        }
    }

    /// The opcode's spec name (VIRTIO_ADMIN_CMD_… without the prefix), or its number.
    public static func name(_ op: UInt16) -> String {
        AdminOpcode(rawValue: op).map { "\($0)" } ?? "opcode 0x\(String(op, radix: 16))"
    }

    static func hint(_ s: AdminStatus, _ q: AdminQualifier) -> String {
        switch (s.effective, q.effective) {
        case (.einval, .invalidGroup): " (the group is not usable now: for SR-IOV, VF Enable must be set)"
        case (.einval, .invalidMember), (.enxio, _): " (no such member: check --member against NumVFs)"
        case (.einval, .invalidOpcode): " (the device does not accept this opcode for the group)"
        case (.eagain, _): " (the device asked to retry; it kept asking)"
        default: ""
        }
    }
}
