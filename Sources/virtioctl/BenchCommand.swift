import ArgumentParser
import VirtioAttach
import Foundation
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice

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

/// The benchmark's result.
struct BenchReport: Codable {
    var device = ""
    var layout = ""
    var negotiated: [String] = []
    var pattern = ""
    var block_size = 0
    var depth = 0
    var queues = 0
    var seconds = 0.0
    var requests = 0
    var errors = 0
    var iops = 0.0
    var mb_per_s = 0.0
    var latency_us: [String: Double] = [:]
    var allocations_per_request = 0.0
    var notifications_per_request = 0.0

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

/// Holds what a worker thread needs; the benchmark hands each thread one queue.
final class WorkerBox<T: VirtioTransport>: @unchecked Sendable {
    let queue: UnsafeMutablePointer<BlockQueue<T>>
    let buffers: DMARegion
    var histogram = LatencyHistogram()
    var result = WorkerResult()
    init(queue: UnsafeMutablePointer<BlockQueue<T>>, buffers: DMARegion) {
        self.queue = queue
        self.buffers = buffers
    }
}

struct BenchRun: BlockDeviceUser {
    let pattern: BenchPattern, blockSize: Int, duration: Double, progress: Bool
    var depth: Int
    /// Lower the depth to what the queue holds instead of refusing (the demo's choice).
    var fitDepth = false

    func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> BenchReport {
        let bs = blockSize
        guard bs % Int(blk.config.blockSize) == 0 else {
            throw CLIError("--block-size \(bs) is not a multiple of the device's \(blk.config.blockSize)-byte logical block size")
        }
        guard blk.config.capacityBytes >= UInt64(bs) else { throw CLIError("the device is smaller than one \(bs)-byte request") }
        if pattern != .randread && pattern != .read && blk.negotiated.contains(BlockFeature.readOnly) {
            throw CLIError("the device is read-only; use --pattern randread or read")
        }
        let info = blk.device.queues
        let piece = blk.maxSegmentBytes
        let perRequest = info.first?.indirect == true ? 1 : 2 + (bs + piece - 1) / piece
        var depth = self.depth
        if fitDepth, let q = info.first { depth = max(1, min(depth, q.size / perRequest)) }
        if let q = info.first, depth * perRequest > q.size {
            throw CLIError("--depth \(depth) needs \(depth * perRequest) descriptors per queue but the queue has \(q.size)"
                + (q.indirect ? "" : " (INDIRECT_DESC is not negotiated, so each request takes \(perRequest))"))
        }
        let workers = blk.queueCount
        let control = BenchControl(workers: workers)
        var boxes: [WorkerBox<T>] = []
        for w in 0..<workers {
            boxes.append(WorkerBox(queue: blk.queuePointer(w), buffers: try blk.allocateBuffer(bytes: depth * bs)))
        }
        let group = DispatchGroup()
        let capacity = blk.config.capacityBytes
        let start = monotonicNanos()
        for (w, box) in boxes.enumerated() {
            group.enter()
            let pattern = self.pattern, depth = depth
            let thread = Thread {
                box.result = benchWorker(queue: box.queue, worker: w, buffers: box.buffers, pattern: pattern, blockSize: bs,
                                         depth: depth, deviceBytes: capacity, control: control, histogram: &box.histogram)
                group.leave()
            }
            thread.start()
        }
        var lastOps = 0
        var lastTime = start
        let deadline = start + UInt64(duration * 1e9)
        while monotonicNanos() < deadline {
            let sleepNs = min(1_000_000_000, deadline - monotonicNanos())
            usleep(UInt32(sleepNs / 1000))
            let now = monotonicNanos()
            let ops = control.completed.reduce(0) { $0 + $1.value.load(ordering: .relaxed) }
            if progress {
                let dt = Double(now - lastTime) / 1e9
                note(String(format: "  %5.1f s  %10.0f IOPS  %8.1f MB/s", Double(now - start) / 1e9,
                            Double(ops - lastOps) / dt, Double(ops - lastOps) * Double(bs) / dt / 1e6))
            }
            lastOps = ops
            lastTime = now
        }
        control.stop.store(true, ordering: .relaxed)
        group.wait()
        let seconds = Double(monotonicNanos() - start) / 1e9

        var histogram = LatencyHistogram()
        var r = BenchReport()
        var steadyOps = 0
        var steadyAllocs: UInt64 = 0
        for box in boxes {
            histogram.merge(box.histogram)
            r.requests += box.result.ops
            r.errors += box.result.errors
            steadyOps += box.result.steadyOps
            steadyAllocs += box.result.steadyAllocations
            if let e = box.result.firstError, r.errors == 0 || box.result.ops == 0 {
                throw CLIError("benchmark stopped: \(e)")
            }
        }
        var notifications: UInt64 = 0
        for q in 0..<workers { notifications += blk.counters(queue: q).notificationsSent }
        r.device = blk.device.transport.name
        r.layout = info.first?.layout.rawValue ?? "?"
        r.negotiated = blk.device.names(blk.negotiated.intersection([VirtioFeature.ringPacked, VirtioFeature.inOrder,
            VirtioFeature.eventIdx, VirtioFeature.indirectDesc, VirtioFeature.notificationData]))
            .map { String($0.dropFirst("VIRTIO_F_".count)) }
        r.pattern = pattern.rawValue
        r.block_size = bs
        r.depth = depth
        r.queues = workers
        r.seconds = seconds
        r.iops = Double(r.requests) / seconds
        r.mb_per_s = Double(r.requests) * Double(bs) / seconds / 1e6
        r.latency_us = ["min": Double(histogram.minimum) / 1000, "mean": histogram.mean / 1000,
                        "p50": Double(histogram.percentile(0.5)) / 1000, "p99": Double(histogram.percentile(0.99)) / 1000,
                        "p99.9": Double(histogram.percentile(0.999)) / 1000, "max": Double(histogram.maximum) / 1000]
        r.allocations_per_request = steadyOps == 0 ? 0 : Double(steadyAllocs) / Double(steadyOps)
        r.notifications_per_request = r.requests == 0 ? 0 : Double(notifications) / Double(r.requests)
        return r
    }
}
