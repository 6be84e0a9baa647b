import ArgumentParser
import Logging
import Foundation
import VirtioCheck
import VirtioCore
import VirtioAttach
import VirtioSoftDevice
import VirtioWire

extension VirtioCtl {
    /// `virtioctl check DEVICE`: the device conformance checker.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drive a device through a scripted conformance suite and name every device-side violation with its spec clause.",
            discussion: """
            Steps: reset, feature negotiation (full and minimal subsets), config generation, then for virtio-blk \
            verified I/O over split and packed rings at the maximum and smaller queue sizes (odd, non-power-of-two \
            sizes for packed) with in-order and indirect on and off, used-buffer notifications with and without \
            EVENT_IDX, ring reset, device reset with requests in flight, the admin handshake and the draft statistics \
            queue when offered. For virtio-net: attach (config, every queue pair), each control command the features \
            allow (acks checked), and ARP requests on each ring layout and without mergeable buffers: every frame \
            must be used, and with --net-peer the peer's reply must arrive. With writes, 32 blocks of 4 KiB at the start of the disk are read, overwritten with \
            test patterns and put back; software devices get writes by default, real disks only with --write. \
            Exit status: 0 clean, 1 the device broke a rule or failed, 2 the device could not be opened, 3 only the \
            checker itself could not run a step.
            """)

        @Argument(help: ArgumentHelp("The device: \(DeviceSpec.syntax)."))
        var device: String

        @Option(name: [.short, .long], help: "Output: normal or json.")
        var output: OutputFormat = .normal

        @Option(help: "How long a batch of requests or an admin command may take, in milliseconds.")
        var timeout: Int = 5_000

        @Flag(help: "Only read from the disk (no test patterns written), also on a software device.")
        var readOnly = false

        @Flag(help: "Write test patterns to a real disk (the first 128 KiB, put back at the end).")
        var write = false

        @Option(name: .customLong("net-peer"), help: "virtio-net: the link-local IPv4 address that must answer the check's ARP requests (a host on the other end of the link).")
        var netPeer: String?

        @Option(name: .customLong("net-ip"), help: "virtio-net: the link-local IPv4 address the ARP requests come from.")
        var netIP = "169.254.0.2"

        @OptionGroup var transport: TransportOptions

        @Flag(name: .shortAndLong, help: "Log each initialisation step to stderr.")
        var verbose = false

        func validate() throws {
            guard (10...600_000).contains(timeout) else { throw ValidationError("--timeout must be 10...600000 ms") }
            guard !(readOnly && write) else { throw ValidationError("--read-only and --write contradict each other") }
            for (flag, v) in [("--net-ip", netIP), ("--net-peer", netPeer ?? netIP)] {
                guard let a = NetPackets.parseIPv4(v), NetPackets.isLinkLocal(a) else {
                    throw ValidationError("\(flag) \(v): expected a link-local IPv4 address (169.254.x.y)")
                }
            }
        }

        func run() throws {
            var options = CheckOptions()
            options.timeoutMilliseconds = timeout
            options.net.address = NetPackets.parseIPv4(netIP)!
            options.net.peer = netPeer.flatMap(NetPackets.parseIPv4)
            let logger = cliLogger(verbose: verbose)
            let report: CheckReport
            do {
                let spec = try DeviceSpec(parsing: device)
                // A software disk is scratch; a real one is written only when asked.
                options.writes = !readOnly && (write || spec.isSoftware)
                report = try DeviceOpening.open(spec, options: try transport.openOptions(logger: logger),
                                                Run(options: options, logger: logger))
            } catch {
                note("virtioctl: check \(device): \(error)")
                throw ExitCode(2)
            }
            switch output {
            case .json: try printJSON(CheckJSON(report))
            case .normal: printReport(report)
            }
            if !report.clean { throw ExitCode(1) }
            if !report.checkerErrors.isEmpty { throw ExitCode(3) }
        }

        /// The checker on whatever transport was opened; a software block device is asked for statistics too.
        struct Run: TransportUser {
            let options: CheckOptions
            let logger: Logger

            func run<T: VirtioTransport>(_ transport: T, soft: SoftFunction?) throws -> CheckReport {
                let checker = DeviceChecker(transport: transport, options: options, logger: logger)
                // On a terminal, a line a second at most (a step on a slow device takes seconds).
                if isatty(STDERR_FILENO) == 1 {
                    let start = monotonicNanoseconds()
                    var last: UInt64 = 0
                    checker.stepDone = { step, n in
                        let now = monotonicNanoseconds()
                        guard now - last >= 1_000_000_000 else { return }
                        last = now
                        note(String(format: "  %5.1f s  %d steps done, last %@ (%@)", Double(now - start) / 1e9, n, step.name, "\(step.outcome)"))
                    }
                }
                if let f = soft?.block { checker.askForStatistics = { f.requestStatistics() } }
                return checker.run()
            }
        }

        func printReport(_ r: CheckReport) {
            print("check \(r.device) (virtio \(r.deviceType))")
            print("offered: \(r.offered.joined(separator: " "))")
            let width = min(34, (r.steps.map(\.name.count).max() ?? 0) + 2)
            for s in r.steps {
                let name = s.name.padding(toLength: max(width, s.name.count + 1), withPad: " ", startingAt: 0)
                print("  \(s.outcome.rawValue.uppercased().padding(toLength: 5, withPad: " ", startingAt: 0)) \(name)\(s.detail)")
                for f in s.findings {
                    print("        \(f.clause == CheckReport.checkerClause ? "CHECKER" : f.severity.rawValue): \(f.message)")
                    print("          clause: \(f.clause)")
                }
            }
            if let a = r.aborted { print("aborted \(a)") }
            let n = r.findings.count
            print("result: \(r.count(.pass)) passed, \(r.count(.fail)) failed, \(r.count(.skip)) skipped; "
                + (r.clean ? "no violations found" : "\(n) finding(s), \(r.brokenClauses.count) distinct rule(s):"))
            for c in r.brokenClauses { print("  \(c.severity.rawValue) (\(c.steps) step\(c.steps == 1 ? "" : "s")): \(c.clause)") }
            if !r.checkerErrors.isEmpty { print("checker: \(r.checkerErrors.count) step(s) could not run (not the device's fault): \(r.checkerErrors[0].message)") }
        }
    }
}

/// `check -o json`: the report plus its summary.
struct CheckJSON: Encodable {
    struct Summary: Encodable {
        let passed, failed, skipped, findings, checkerErrors: Int
        let clean: Bool
        let rules: [String]
    }
    let device: String
    let deviceType: String
    let offered: [String]
    let steps: [CheckStep]
    let aborted: String?
    let summary: Summary

    init(_ r: CheckReport) {
        device = r.device
        deviceType = r.deviceType
        offered = r.offered
        steps = r.steps
        aborted = r.aborted
        summary = Summary(passed: r.count(.pass), failed: r.count(.fail), skipped: r.count(.skip), findings: r.findings.count,
                          checkerErrors: r.checkerErrors.count, clean: r.clean, rules: r.brokenClauses.map(\.clause))
    }
}
