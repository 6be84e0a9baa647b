/// How bad a finding is: a broken MUST, a broken SHOULD, or the device failing at its job
/// (no completion, DEVICE_NEEDS_RESET, gone, wrong data) without a clause to cite.
public enum FindingSeverity: String, Sendable, Codable {
    case must = "MUST"
    case should = "SHOULD"
    case failure = "FAILURE"
}

/// One thing the device did wrong, with the clause it breaks.
public struct CheckFinding: Sendable, Equatable, Codable {
    public let severity: FindingSeverity
    /// Where in the spec: the section (and .tex file) the rule lives in, and the rule in words.
    public let clause: String
    /// What the device did, with the values it wrote.
    public let message: String

    public init(_ severity: FindingSeverity, clause: String, _ message: String) {
        self.severity = severity
        self.clause = clause
        self.message = message
    }
}

/// The outcome of one scripted step.
public enum StepOutcome: String, Sendable, Codable {
    case pass, fail, skip
}

/// One step of the suite: what ran, and what it found.
public struct CheckStep: Sendable, Codable {
    public let name: String
    public var outcome: StepOutcome
    /// What was exercised (or why it was skipped).
    public var detail: String
    public var findings: [CheckFinding]

    public init(name: String, outcome: StepOutcome = .pass, detail: String = "", findings: [CheckFinding] = []) {
        self.name = name
        self.outcome = outcome
        self.detail = detail
        self.findings = findings
    }
}

/// Everything `virtioctl check` found on one device.
public struct CheckReport: Sendable, Codable {
    public let device: String
    public var deviceType: String
    public var offered: [String] = []
    public var steps: [CheckStep] = []
    /// Set when the device stopped answering and the rest of the suite did not run.
    public var aborted: String?

    public init(device: String, deviceType: String) {
        self.device = device
        self.deviceType = deviceType
    }

    /// What the device did wrong (the checker's own failures are `checkerErrors`).
    public var findings: [CheckFinding] { steps.flatMap(\.findings).filter { $0.clause != Clause.checker } }
    /// Steps the checker itself could not run (out of DMA memory, a request it could not build): not the device's fault.
    public var checkerErrors: [CheckFinding] { steps.flatMap(\.findings).filter { $0.clause == Clause.checker } }
    public var clean: Bool { findings.isEmpty && aborted == nil }
    /// The clause of a checker error.
    public static var checkerClause: String { Clause.checker }
    public func count(_ outcome: StepOutcome) -> Int { steps.filter { $0.outcome == outcome }.count }

    /// Each distinct clause broken, with how many steps hit it (for the summary).
    public var brokenClauses: [(clause: String, severity: FindingSeverity, steps: Int)] {
        var order: [String] = []
        var seen: [String: (FindingSeverity, Int)] = [:]
        for step in steps {
            var stepClauses: [String] = []
            for f in step.findings where !stepClauses.contains(f.clause) && f.clause != Clause.checker { stepClauses.append(f.clause) }
            for clause in stepClauses {
                let severity = step.findings.first { $0.clause == clause }!.severity
                if seen[clause] == nil { order.append(clause) }
                seen[clause] = (severity, (seen[clause]?.1 ?? 0) + 1)
            }
        }
        return order.map { ($0, seen[$0]!.0, seen[$0]!.1) }
    }
}
