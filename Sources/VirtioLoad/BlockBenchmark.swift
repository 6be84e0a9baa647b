import Foundation
import Synchronization
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioWire

/// The benchmark's result.
public struct BenchReport: Codable, Sendable {
    public var device = ""
    public var layout = ""
    public var negotiated: [String] = []
    public var pattern = ""
    public var block_size = 0
    public var depth = 0
    public var queues = 0
    public var seconds = 0.0
    public var requests = 0
    public var errors = 0
    public var iops = 0.0
    public var mb_per_s = 0.0
    public var latency_us: [String: Double] = [:]
    public var allocations_per_request = 0.0
    public var notifications_per_request = 0.0
    public init() {}
}

/// Holds what a worker thread needs; the benchmark hands each thread one queue.
@usableFromInline
final class WorkerBox<T: VirtioTransport>: @unchecked Sendable {
    @usableFromInline let queue: UnsafeMutablePointer<BlockQueue<T>>
    @usableFromInline let buffers: DMARegion
    @usableFromInline var histogram = LatencyHistogram()
    @usableFromInline var result = WorkerResult()
    @usableFromInline init(queue: UnsafeMutablePointer<BlockQueue<T>>, buffers: DMARegion) {
        self.queue = queue
        self.buffers = buffers
    }
}

/// fio-style load on a block device: one worker thread per queue, each keeping `depth` requests
/// in flight; IOPS, MB/s, latency percentiles, allocations and doorbells per request.
public struct BlockBenchmark: Sendable {
    public let pattern: BenchPattern, blockSize: Int, duration: Double
    public var depth: Int
    /// Lower the depth to what the queue holds instead of refusing (the demo's choice).
    public var fitDepth = false
    /// Called once a second with a progress line.
    public var progress: (@Sendable (String) -> Void)?

    public init(pattern: BenchPattern, blockSize: Int, depth: Int, duration: Double) {
        self.pattern = pattern
        self.blockSize = blockSize
        self.depth = depth
        self.duration = duration
    }

    /// Inlinable so the workers are specialised for the caller's transport (see `benchWorker`).
    @inlinable
    public func run<T: VirtioTransport>(_ blk: BlockDevice<T>) throws -> BenchReport {
        let bs = blockSize
        guard bs % Int(blk.config.blockSize) == 0 else {
            throw LoadError("--block-size \(bs) is not a multiple of the device's \(blk.config.blockSize)-byte logical block size")
        }
        guard blk.config.capacityBytes >= UInt64(bs) else { throw LoadError("the device is smaller than one \(bs)-byte request") }
        if pattern != .randread && pattern != .read && blk.negotiated.contains(BlockFeature.readOnly) {
            throw LoadError("the device is read-only; use --pattern randread or read")
        }
        let info = blk.device.queues
        let piece = blk.maxSegmentBytes
        let perRequest = info.first?.indirect == true ? 1 : 2 + (bs + piece - 1) / piece
        var depth = self.depth
        if fitDepth, let q = info.first { depth = max(1, min(depth, q.size / perRequest)) }
        if let q = info.first, depth * perRequest > q.size {
            throw LoadError("--depth \(depth) needs \(depth * perRequest) descriptors per queue but the queue has \(q.size)"
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
        let start = monotonicNanoseconds()
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
        while monotonicNanoseconds() < deadline {
            let sleepNs = min(1_000_000_000, deadline - monotonicNanoseconds())
            usleep(UInt32(sleepNs / 1000))
            let now = monotonicNanoseconds()
            let ops = control.completed.reduce(0) { $0 + $1.value.load(ordering: .relaxed) }
            if let progress {
                let dt = Double(now - lastTime) / 1e9
                progress(String(format: "  %5.1f s  %10.0f IOPS  %8.1f MB/s", Double(now - start) / 1e9,
                            Double(ops - lastOps) / dt, Double(ops - lastOps) * Double(bs) / dt / 1e6))
            }
            lastOps = ops
            lastTime = now
        }
        control.stop.store(true, ordering: .relaxed)
        group.wait()
        let seconds = Double(monotonicNanoseconds() - start) / 1e9

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
                throw LoadError("benchmark stopped: \(e)")
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
