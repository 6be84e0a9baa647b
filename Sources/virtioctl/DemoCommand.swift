import ArgumentParser
import VirtioAttach
import VirtioLoad
import Foundation
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice

extension VirtioCtl {
    /// `virtioctl demo`: the block driver on a software virtio-blk PCI function, end to end.
    struct Demo: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Attach the block driver to soft:blk, negotiate packed and in-order, move verified data, and benchmark briefly.",
            discussion: "The software device is a virtio PCI function in this process: configuration space, capabilities, common/notify/ISR/device registers and device-side rings. The driver walks its capabilities, negotiates, sets up queues in DMA memory and does I/O exactly as it would on hardware.")

        @Option(help: "The device: a soft:blk spelling (e.g. soft:blk,packed=off) or a PCI address bound to vfio-pci.") var device = "soft:blk"
        @Option(name: [.short, .long], help: "Output format: normal or json.") var output: OutputFormat = .normal
        @Option(help: "Blocks of 4 KiB to write and read back.") var blocks = 4096
        @Option(help: "Seconds for each benchmark phase.") var seconds: Double = 1

        func validate() throws {
            guard (1...1_000_000).contains(blocks) else { throw ValidationError("--blocks must be in 1...1000000") }
            guard seconds > 0, seconds <= 60 else { throw ValidationError("--seconds must be in (0, 60]") }
        }

        func run() throws {
            var options = try DeviceOptions.parse([device, "-o", output.rawValue])
            options.verbose = false
            let demo = try options.withBlockDevice(DemoRun(blocks: blocks))
            var reports: [BenchReport] = []
            for pattern in [BenchPattern.randread, .randwrite] {
                let bench = BenchRun(pattern: pattern, blockSize: 4096, duration: seconds, progress: false, depth: 32, fitDepth: true)
                reports.append(try options.withBlockDevice(bench))
            }
            if output == .json {
                struct Out: Codable { let verify: DemoReport; let bench: [BenchReport] }
                try printJSON(Out(verify: demo, bench: reports))
                return
            }
            print("virtioctl demo: block driver -> virtio PCI transport -> software virtio-blk function (\(device))")
            print("negotiated:  \(demo.negotiated.joined(separator: " "))")
            print("queue 0:     \(demo.layout), size \(demo.queueSize)\(demo.inOrder ? ", in-order" : "")")
            print("capacity:    \(humanBytes(demo.capacityBytes)), serial \"\(demo.serial)\"")
            print("verified:    \(demo.blocksVerified)/\(demo.blocks) blocks of 4 KiB written then read back "
                + "(\(demo.requests) requests, up to \(demo.depth) in flight), flush ok" + (demo.zeroesVerified ? ", write-zeroes reads back zeroes" : ""))
            for r in reports {
                print(String(format: "bench:       %@ 4 KiB depth %d: %.0f IOPS, p50 %.2f µs, p99 %.2f µs, %.3f allocations/request",
                             r.pattern, r.depth, r.iops, r.latency_us["p50"] ?? 0, r.latency_us["p99"] ?? 0, r.allocations_per_request))
            }
            if !device.hasPrefix("soft:") {
                print("conformance: checked by soft:blk only; this was a real device")
            } else if demo.conformanceViolations.isEmpty {
                print("conformance: the software device checked every register access and doorbell; the driver broke no rule")
            } else {
                print("conformance: \(demo.conformanceViolations.count) rule(s) broken: " + demo.conformanceViolations.joined(separator: "; "))
                throw ExitCode(2)
            }
        }
    }
}

struct DemoReport: Codable {
    var device = ""
    var negotiated: [String] = []
    var layout = ""
    var queueSize = 0
    var inOrder = false
    var capacityBytes: UInt64 = 0
    var serial = ""
    var blocks = 0
    var blocksVerified = 0
    var requests = 0
    var depth = 0
    var conformanceViolations: [String] = []
    var zeroesVerified = false
}

/// Writes `blocks` random 4 KiB blocks with many requests in flight, reads them back and compares;
/// then checks flush and discard.
struct DemoRun: BlockDeviceUser {
    let blocks: Int

    func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> DemoReport {
        var r = DemoReport()
        r.device = blk.device.transport.name
        r.negotiated = blk.device.names(blk.negotiated)
        let q = blk.device.queues[0]
        (r.layout, r.queueSize, r.inOrder) = (q.layout.rawValue, q.size, q.inOrder)
        r.capacityBytes = blk.capacityBytes
        r.serial = try blk.serial()
        let slots = Int(blk.capacityBytes / 4096)
        let count = min(blocks, slots)
        r.blocks = count
        // A permutation of block numbers, so every block written is distinct.
        var order = Array(0..<slots)
        var rng = SystemRandomNumberGenerator()
        order.shuffle(using: &rng)
        let targets = Array(order.prefix(count))
        let depth = min(16, q.size / (q.indirect ? 1 : 3))
        r.depth = depth
        let buffer = try blk.allocateBuffer(bytes: count * 4096)
        let seed = UInt64.random(in: 1...UInt64.max)
        for (i, t) in targets.enumerated() { pattern(buffer.pointer + i * 4096, block: UInt64(t), seed: seed) }
        r.requests += try pipeline(blk, targets: targets, buffer: buffer, op: .write, depth: depth)
        try blk.flush()
        buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: count * 4096)
        r.requests += try pipeline(blk, targets: targets, buffer: buffer, op: .read, depth: depth)
        let expected = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
        defer { expected.deallocate() }
        for (i, t) in targets.enumerated() {
            pattern(expected, block: UInt64(t), seed: seed)
            if memcmp(expected, buffer.pointer + i * 4096, 4096) == 0 { r.blocksVerified += 1 }
        }
        guard r.blocksVerified == count else {
            throw CLIError("verification failed: \(count - r.blocksVerified) of \(count) blocks read back different data")
        }
        // Write-zeroes (unlike discard, which promises nothing about later reads) must read back zeroes.
        if blk.negotiated.contains(BlockFeature.writeZeroes), let first = targets.first {
            try blk.writeZeroes(sector: UInt64(first) * 8, sectors: 8)
            let one = buffer.slice(offset: 0, length: 4096)
            try blk.read(sector: UInt64(first) * 8, into: one)
            guard UnsafeRawBufferPointer(start: one.pointer, count: 4096).allSatisfy({ $0 == 0 }) else {
                throw CLIError("a block zeroed with WRITE_ZEROES did not read back as zeroes")
            }
            r.zeroesVerified = true
        }
        r.conformanceViolations = soft?.log.violations.map(\.description) ?? []
        return r
    }

    /// Submits one request per target block keeping `depth` in flight; returns requests done.
    func pipeline<T>(_ blk: BlockDevice<T>, targets: [Int], buffer: DMARegion, op: VirtioDrivers.BlockOperation, depth: Int) throws -> Int {
        try blk.withQueue(0) { (q: inout BlockQueue<T>) throws -> Int in
            var next = 0, done = 0
            var idle = 0
            while done < targets.count {
                var submitted = false
                while next < targets.count, q.inFlight < depth {
                    let e = BufferElement(address: buffer.deviceAddress + UInt64(next * 4096), length: 4096)
                    try q.submit(op, sector: UInt64(targets[next]) * 8, data: e, tag: UInt64(next))
                    next += 1
                    submitted = true
                }
                if submitted { q.kick() }
                var reaped = 0
                while let c = try q.poll() {
                    guard c.result == .ok else { throw CLIError("\(op) of block \(targets[Int(c.tag)]) failed: \(c.result)") }
                    done += 1
                    reaped += 1
                }
                idle = reaped == 0 ? idle + 1 : 0
                if idle > 50_000_000 { throw CLIError("the device stopped completing requests (\(q.inFlight) in flight)") }
            }
            return done
        }
    }

    func pattern(_ p: UnsafeMutableRawPointer, block: UInt64, seed: UInt64) {
        var x = block &* 0x9E37_79B9_7F4A_7C15 ^ seed
        for i in stride(from: 0, to: 4096, by: 8) {
            x ^= x >> 31; x &*= 0x94D0_49BB_1331_11EB; x ^= x >> 29
            p.storeBytes(of: x, toByteOffset: i, as: UInt64.self)
        }
    }
}
