import ArgumentParser
import VirtioAttach
import VirtioLoad
import Foundation
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice
import VirtioWire

extension VirtioCtl.Blk {
    /// `virtioctl blk bench DEVICE`: fio-style load with latency percentiles.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drive a block device at a fixed queue depth and report IOPS, MB/s and latency percentiles.",
            discussion: "One worker thread per queue, each keeping --depth requests in flight and polling for completions (or sleeping on its MSI-X eventfd with --interrupts msix). Progress goes to stderr once a second. With soft:blk the device runs in the worker's thread, so the figures are driver plus device cost.")

        @OptionGroup var device: DeviceOptions
        @Option(help: "I/O mix: \(BenchPattern.allCases.map(\.rawValue).joined(separator: ", ")).") var pattern: BenchPattern = .randread
        @Option(help: "Bytes per request, e.g. 4K (a multiple of the logical block size).") var blockSize: String = "4K"
        @Option(help: "Requests in flight per queue.") var depth = 32
        @Option(help: "Seconds to run.") var duration: Double = 3
        @Flag(help: "No progress lines.") var quiet = false

        func validate() throws {
            guard (1...4096).contains(depth) else { throw ValidationError("--depth must be in 1...4096") }
            guard duration > 0, duration <= 3600 else { throw ValidationError("--duration must be in (0, 3600] seconds") }
            guard let bs = parseByteSize(blockSize), bs >= 512, bs <= 4 << 20, bs % 512 == 0 else {
                throw ValidationError("--block-size \(blockSize): expected a multiple of 512 up to 4M, e.g. 4K")
            }
        }

        func run() throws {
            let bs = Int(parseByteSize(blockSize)!)
            let report = try device.withBlockDevice(BenchRun(pattern: pattern, blockSize: bs, duration: duration,
                                                             progress: !quiet, depth: depth))
            if device.output == .json { try printJSON(report) } else { report.print() }
        }
    }
}

extension BenchPattern: ExpressibleByArgument {}

extension BenchReport {
    func print() {
        Swift.print("device:      \(device) (\(layout); \(negotiated.joined(separator: " ")))")
        Swift.print("load:        \(pattern), \(block_size) B, depth \(depth) x \(queues) queue(s), \(String(format: "%.1f", seconds)) s")
        Swift.print(String(format: "throughput:  %.0f IOPS, %.1f MB/s, %d requests, %d errors", iops, mb_per_s, requests, errors))
        let l = latency_us
        Swift.print(String(format: "latency µs:  min %.2f  mean %.2f  p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f",
                           l["min"] ?? 0, l["mean"] ?? 0, l["p50"] ?? 0, l["p99"] ?? 0, l["p99.9"] ?? 0, l["max"] ?? 0))
        Swift.print(String(format: "per request: %.3f heap allocations (steady state, worker threads), %.3f doorbell writes",
                           allocations_per_request, notifications_per_request))
    }
}

/// `blk bench` (and the demo) on whatever block device was opened.
struct BenchRun: BlockDeviceUser {
    let pattern: BenchPattern, blockSize: Int, duration: Double, progress: Bool
    var depth: Int
    /// Lower the depth to what the queue holds instead of refusing (the demo's choice).
    var fitDepth = false

    func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> BenchReport {
        var b = BlockBenchmark(pattern: pattern, blockSize: blockSize, depth: depth, duration: duration)
        b.fitDepth = fitDepth
        if progress { b.progress = { note($0) } }
        return try b.run(blk)
    }
}
