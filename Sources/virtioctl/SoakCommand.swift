import ArgumentParser
import VirtioAttach
import Foundation
import VirtioCheck
import VirtioCore
import VirtioDrivers
import VirtioSoftDevice

extension VirtioCtl {
    /// `virtioctl soak DEVICE`: random verified I/O over every queue, with faults on a software device.
    struct Soak: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Random reads and writes of self-checking 4 KiB blocks over every request queue, recovering from device faults; reports completed, retried, corrupt and lost requests.",
            discussion: "Writes test data over the first --blocks x 4 KiB of the disk (not restored). With --fault-rate on soft:blk, one-shot faults (bad used ids, duplicates, length overflow, index jumps, lying flags, DEVICE_NEEDS_RESET, a request never completed) strike at random points. Exit status 1 when a block read back corrupt, a request was lost or given up on, or the soak stopped early.")

        @OptionGroup var device: DeviceOptions

        @Option(help: "Requests to complete (reads and writes, 50/50).") var requests = 100_000
        @Option(help: "Blocks of 4 KiB to spread the requests over.") var blocks = 1024
        @Option(help: "Requests in flight per queue.") var depth = 16
        @Option(help: "Chance per completion that a fault is injected (soft:blk only), e.g. 0.0001.") var faultRate = 0.0
        @Option(help: "How long a request may stay with the device before it counts as hung, in ms.") var timeout = 200
        @Option(help: "Random seed (the same seed gives the same requests).") var seed: UInt64 = 1

        func validate() throws {
            guard requests >= 1 else { throw ValidationError("--requests must be at least 1") }
            guard (16...1 << 20).contains(blocks) else { throw ValidationError("--blocks must be 16...1048576") }
            guard (1...256).contains(depth) else { throw ValidationError("--depth must be 1...256") }
            guard (0...0.5).contains(faultRate) else { throw ValidationError("--fault-rate must be 0...0.5") }
            guard (10...600_000).contains(timeout) else { throw ValidationError("--timeout must be 10...600000 ms") }
            guard device.interrupts == .poll else { throw ValidationError("soak polls, and recovery is poll mode only: drop --interrupts msix") }
        }

        /// The soak on the attached device; on soft:blk the fault injector arms one-shot faults at random.
        struct Run: BlockDeviceUser {
            let options: SoakOptions
            func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> SoakReport {
                let soak = try IntegritySoak(blk, options: options)
                // Progress only for a person watching: a pipe or a log file gets the report alone.
                if isatty(STDERR_FILENO) == 1 {
                    let total = options.requests
                    soak.progress = { r, seconds in
                        note(String(format: "  %5.1f s  %d of %d requests  corrupt %d  lost %d  retried %d  recoveries %d",
                                    seconds, r.completed, total, r.corrupt, r.lost, r.retried, r.recoveries))
                    }
                }
                if let soft, options.faultRate > 0 {
                    var pick = options.seed
                    soak.injectFault = { q in
                        pick = pick &* 6364136223846793005 &+ 1442695040888963407
                        let all = SoftInjectedFault.allCases
                        let fault = all[Int(pick >> 33) % all.count]
                        return soft.inject(fault, queue: q) ? fault.name : nil
                    }
                }
                return try soak.run()
            }
        }

        func run() throws {
            var o = SoakOptions()
            o.requests = requests
            o.blocks = blocks
            o.depth = depth
            o.faultRate = faultRate
            o.timeoutMilliseconds = timeout
            o.seed = seed
            // Refused before anything is opened: a real device cannot be told to misbehave.
            if faultRate > 0 {
                guard try device.spec().softBlockOptions != nil else {
                    throw CLIError("--fault-rate needs a software device (soft:blk); for one behind vfio-user, serve it with `softdev serve soft:blk,fault=...`")
                }
            }
            let report = try device.withBlockDevice(Run(options: o))
            switch device.output {
            case .json: try printJSON(report)
            case .normal:
                print("soak \(device.device): \(report.completed) requests (\(report.reads) reads, \(report.writes) writes) over \(report.queues) queue(s) in \(String(format: "%.1f", report.seconds)) s")
                print("  corrupt \(report.corrupt), lost \(report.lost), failed \(report.failed), retried \(report.retried), recoveries \(report.recoveries)")
                if let why = report.stopped { print("  stopped early: \(why)") }
                if !report.injected.isEmpty {
                    print("  faults injected: " + report.injected.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                }
                for (cause, n) in report.causes.sorted(by: { $0.value > $1.value }) { print("  recovered \(n)x after: \(cause)") }
            }
            if report.corrupt > 0 || report.lost > 0 || report.failed > 0 || report.stopped != nil { throw ExitCode(1) }
        }
    }
}
