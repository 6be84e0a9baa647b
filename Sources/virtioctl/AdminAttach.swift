import ArgumentParser
import Foundation
import Logging
import VirtioAttach
import VirtioCore
import VirtioSoftDevice
import VirtioWire

/// Output of admin verbs: text, JSON, or the raw result bytes on stdout.
enum AdminOutput: String, ExpressibleByArgument, CaseIterable {
    case normal, json, binary
}

enum GroupChoice: String, ExpressibleByArgument, CaseIterable {
    case `self`, sriov
    var group: AdminGroup { self == .self ? .selfGroup : .sriov }
}

/// What every admin verb takes besides the device.
struct AdminOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Output: normal, json, or binary (raw result bytes on stdout).")
    var output: AdminOutput = .normal

    @Option(help: "How long to wait for each command, in milliseconds.")
    var timeout: Int = 5_000

    @Flag(name: .shortAndLong, help: "Log each initialisation step to stderr.")
    var verbose = false

    @OptionGroup var transport: TransportOptions

    func validate() throws {
        guard (1...600_000).contains(timeout) else { throw ValidationError("--timeout must be 1...600000 ms") }
    }

    var logger: Logger { cliLogger(verbose: verbose) }
}

/// The member a command names: `--member N` (a VF number for the sriov group, 0 for self).
struct MemberOption: ParsableArguments {
    @Option(help: "Group type: self or sriov.")
    var group: GroupChoice = .sriov

    @Option(help: "Member id: the VF number (1...NumVFs) for the sriov group; 0 for self.")
    var member: UInt64?

    func resolved() throws -> (AdminGroup, UInt64) {
        switch group {
        case .self:
            guard (member ?? 0) == 0 else { throw CLIError("--member: the self group has only member 0") }
            return (.selfGroup, 0)
        case .sriov:
            guard let member else { throw CLIError("--member N is required for the sriov group (a VF number, 1...NumVFs)") }
            return (.sriov, member)
        }
    }
}

/// Something an admin verb does with the channel once the device is attached.
protocol AdminVerb: ParsableCommand {
    var common: AdminOptions { get }
    /// Checks input before anything is attached (bad input sends nothing).
    func prepare() throws
    func perform<T: VirtioTransport>(_ channel: AdminChannel<T>) throws
}

extension AdminVerb {
    func prepare() throws {}
}

/// Attaches DEVICE for its admin queue only (no request queues), runs `verb`, and resets the device.
func withAdminChannel<V: AdminVerb>(device: String, verb: V) throws {
    try verb.prepare()
    let o = verb.common
    let options = try o.transport.openOptions(logger: o.logger)
    try DeviceOpening.open(try DeviceSpec(parsing: device), options: options, AdminRun(verb: verb))
}

/// The admin verb on whatever transport was opened.
struct AdminRun<V: AdminVerb>: TransportUser {
    let verb: V

    func run<T: VirtioTransport>(_ transport: T, soft: SoftFunction?) throws {
        let o = verb.common
        let device = VirtioDevice(transport: transport, logger: o.logger)
        defer { try? device.reset() }
        try device.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
        let channel: AdminChannel<T>
        do { channel = try AdminChannel(device: device) } catch {
            device.fail()
            throw error
        }
        channel.timeoutMilliseconds = o.timeout
        try device.driverOK()
        try verb.perform(channel)
        for v in soft?.violations ?? [] { note("virtioctl: warning: the soft owner saw a driver conformance violation: \(v)") }
    }
}

/// `a0ff 12`, `0xA0FF12`, `a0:ff:12` → bytes; nil for anything else.
func parseHex(_ text: String) -> [UInt8]? {
    var t = text.lowercased().filter { !" :_\n\t".contains($0) }
    if t.hasPrefix("0x") { t.removeFirst(2) }
    guard t.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    var i = t.startIndex
    while i < t.endIndex {
        let j = t.index(i, offsetBy: 2)
        guard let b = UInt8(t[i..<j], radix: 16) else { return nil }
        out.append(b)
        i = j
    }
    return out
}

/// `0x0011`: a number in hex, zero-padded to `digits`.
func hexPadded<I: BinaryInteger>(_ v: I, _ digits: Int) -> String {
    let h = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, digits - h.count)) + h
}

func hexString(_ b: [UInt8]) -> String { b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

/// Raw bytes to stdout (`-o binary`).
func writeBinary(_ b: [UInt8]) { FileHandle.standardOutput.write(Data(b)) }

/// Prints a hex dump: 16 bytes a line with offsets.
func hexDump(_ b: [UInt8]) {
    for start in stride(from: 0, to: b.count, by: 16) {
        let line = b[start..<min(start + 16, b.count)].map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
        print(hexPadded(start, 4).dropFirst(2) + "  " + line)
    }
}
