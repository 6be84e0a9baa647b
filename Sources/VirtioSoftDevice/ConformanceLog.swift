import Synchronization

/// A driver action the software device saw, in order (control path only; notifies are counted).
public enum SoftEvent: Sendable, Equatable {
    /// device_status written with this value (0 = reset).
    case status(UInt8)
    /// device_status read while a reset was still in progress.
    case statusReadDuringReset(UInt8)
    case driverFeatures(select: UInt32, value: UInt32)
    case queueField(queue: Int, field: String)
    case queueEnable(queue: Int, value: UInt16)
    case queueReset(queue: Int)
    case commandRegister(UInt16)
    /// An admin command the function (as owner) received: opcode, group, member.
    case adminCommand(opcode: UInt16, group: UInt16, member: UInt64)
    /// DEV_PARTS_SET made this function (as member) run these queues from restored state.
    case partsRestored(queues: [Int])
    /// DEV_PARTS_SET refused, and why.
    case partsRefused(String)
}

/// A rule the driver broke, as seen from inside the device: the clause and what happened.
public struct ConformanceViolation: Sendable, Equatable, CustomStringConvertible {
    public let rule: String
    public let detail: String
    public var description: String { "\(detail) (\(rule))" }
}

/// The device's record of what the driver did and which rules it broke. A driver that breaks a
/// rule on every frame (DPDK's num_buffers in io mode) must not grow it without bound: the first
/// `keptPerRule` violations of each rule are kept in full, the rest only counted.
public final class ConformanceLog: Sendable {
    private struct State {
        var events: [SoftEvent] = []
        var violations: [ConformanceViolation] = []
        var counts: [String: Int] = [:]
        var total = 0
    }
    private let state = Mutex<State>(State())
    public static let keptPerRule = 8

    public var events: [SoftEvent] { state.withLock { $0.events } }
    /// The violations kept, in order (at most `keptPerRule` of each rule).
    public var violations: [ConformanceViolation] { state.withLock { $0.violations } }
    /// Every violation seen, kept or only counted.
    public var violationTotal: Int { state.withLock { $0.total } }

    func record(_ e: SoftEvent) { state.withLock { $0.events.append(e) } }
    func violation(_ rule: String, _ detail: String) {
        state.withLock { s in
            s.total += 1
            let n = s.counts[rule, default: 0] + 1
            s.counts[rule] = n
            if n <= Self.keptPerRule { s.violations.append(ConformanceViolation(rule: rule, detail: detail)) }
        }
    }
    public func clear() { state.withLock { $0 = State() } }
}
