import Foundation
import TestSupport
import Testing
import VFIO
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing

/// How tools/qemu-test points these tests at a real device (all through the environment):
/// - VIRTIO_TEST_PCI: a virtio-blk function bound to vfio-pci (unset: the suite is skipped)
/// - VIRTIO_TEST_NOIOMMU=1: the function is bound in no-IOMMU mode
/// - VIRTIO_TEST_VFIO=group|iommufd: the VFIO backend (default: the cdev when the kernel has one)
/// - VIRTIO_TEST_INTERRUPTS=msix: complete through MSI-X eventfds instead of polling
/// - VIRTIO_TEST_FEATURE_OFF: comma-separated feature names not to negotiate
/// - VIRTIO_TEST_PATTERN: a file the host wrote into the image before boot
enum RealDevice {
    static let env = ProcessInfo.processInfo.environment
    static let address = env["VIRTIO_TEST_PCI"]
    static var interrupts: Bool { env["VIRTIO_TEST_INTERRUPTS"] == "msix" }
    static var backend: VFIOBackend { VFIOBackend(rawValue: env["VIRTIO_TEST_VFIO"] ?? "auto") ?? .auto }

    static func function(dmaBytes: Int = 64 << 20) throws -> VFIOPCIFunction {
        try VFIOPCIFunction(address: address!, allowNoIOMMU: env["VIRTIO_TEST_NOIOMMU"] == "1", dmaBytes: dmaBytes, backend: backend)
    }

    static func open() throws -> BlockDevice<PCITransport<VFIOPCIFunction>> {
        let function = try function()
        let transport = try PCITransport(function: function)
        var options = BlockAttachOptions()
        options.interrupts = interrupts
        var off = FeatureSet()
        for name in (env["VIRTIO_TEST_FEATURE_OFF"] ?? "").split(separator: ",") {
            off.insert(try #require(FeatureNames.parse(String(name), deviceType: .block), "unknown feature \(name)"))
        }
        options.policy = FeaturePolicy(forcedOff: off)
        return try BlockDevice(transport: transport, options: options)
    }
}

/// Runs `chunks` requests of `chunkBytes` over every queue of `blk`, each queue keeping up to
/// `depth` in flight; `prepare` fills a buffer before a write, `check` looks at one after a read.
func pipelined<T>(_ blk: BlockDevice<T>, write: Bool, chunks: Int, chunkBytes: Int, depth: Int,
                  prepare: (Int, DMARegion) -> Void, check: (Int, DMARegion) -> Void) throws {
    let queues = blk.queueCount
    // One buffer per slot, allocated separately: no-IOMMU memory is contiguous per allocation only.
    var buffers: [[DMARegion]] = []
    for _ in 0..<queues { buffers.append(try (0..<depth).map { _ in try blk.allocateBuffer(bytes: chunkBytes) }) }
    var free: [[Int]] = (0..<queues).map { _ in Array(0..<depth) }
    var slotChunk = [[Int]](repeating: [Int](repeating: -1, count: depth), count: queues)
    var next = 0, done = 0
    let sectorsPerChunk = UInt64(chunkBytes / 512)
    var deadline = ContinuousClock.now + .seconds(300)
    while done < chunks {
        var progress = false
        for q in 0..<queues {
            try blk.withQueue(q) { queue throws in
                var added = 0
                while next < chunks, queue.slotsFree > 0, let slot = free[q].popLast() {
                    let chunk = next
                    next += 1
                    let b = buffers[q][slot]
                    if write { prepare(chunk, b) } else { memset(b.pointer, 0xEE, chunkBytes) }  // libc: fast under TCG
                    do {
                        try queue.submit(write ? .write : .read, sector: UInt64(chunk) * sectorsPerChunk,
                                         data: BufferElement(address: b.deviceAddress, length: UInt32(chunkBytes)), tag: UInt64(slot))
                    } catch {
                        if case BlockError.queueFull = error { free[q].append(slot); next -= 1; break }
                        throw error
                    }
                    slotChunk[q][slot] = chunk
                    added += 1
                }
                if added > 0 { queue.kick() }
                while let c = try queue.poll() {
                    let slot = Int(c.tag)
                    #expect(c.result == .ok, "chunk \(slotChunk[q][slot]) on queue \(q): \(c.result)")
                    if !write { check(slotChunk[q][slot], buffers[q][slot]) }
                    free[q].append(slot)
                    done += 1
                    progress = true
                }
                if !progress, queue.inFlight > 0 { queue.waitForInterrupt(timeoutMilliseconds: 10) }
            }
        }
        if progress { deadline = ContinuousClock.now + .seconds(300) }
        if !progress, ContinuousClock.now > deadline {
            Issue.record("no completion for 300 s; \(done)/\(chunks) done")
            return
        }
    }
}

/// Chunk contents that are cheap to make and check under TCG (libc memcpy/memcmp, not a
/// byte loop): a random megabyte rotated per chunk and generation, with every 512-byte sector
/// stamped with its own number and the generation (a misplaced or stale sector shows).
struct ChunkPattern {
    let random: [UInt8]  // 2 MiB: any 1 MiB window of it
    let chunkBytes: Int
    init(chunkBytes: Int) {
        var rng = SplitMix(seed: 0x5EED)
        var words = [UInt64](repeating: 0, count: (2 << 20) / 8)
        for i in words.indices { words[i] = rng.next() }
        random = words.withUnsafeBytes { Array($0) }
        self.chunkBytes = chunkBytes
    }

    func fill(_ p: UnsafeMutableRawPointer, chunk: Int, gen: UInt64) {
        let shift = (chunk &* 4099 &+ Int(gen) &* 131) % (1 << 20)
        random.withUnsafeBytes { p.copyMemory(from: $0.baseAddress! + shift, byteCount: chunkBytes) }
        let sectors = chunkBytes / 512
        for s in 0..<sectors {
            p.storeBytes(of: UInt64(chunk * sectors + s) | gen << 48, toByteOffset: s * 512, as: UInt64.self)
        }
    }

    func matches(_ p: UnsafeRawPointer, chunk: Int, gen: UInt64, scratch: UnsafeMutableRawPointer) -> Bool {
        fill(scratch, chunk: chunk, gen: gen)
        return memcmp(p, scratch, chunkBytes) == 0
    }
}

@Suite(.serialized, .leakChecked, .enabled(if: RealDevice.address != nil, "set VIRTIO_TEST_PCI (tools/qemu-test does)"))
struct RealDeviceTests {
    static let chunkBytes = 64 << 10

    /// The host wrote a file into the image before boot: every byte reads back as written.
    @Test(.enabled(if: RealDevice.env["VIRTIO_TEST_PATTERN"] != nil))
    func hostWrittenPatternReadsBackExactly() throws {
        let expected = try Data(contentsOf: URL(fileURLWithPath: RealDevice.env["VIRTIO_TEST_PATTERN"]!))
        let blk = try RealDevice.open()
        #expect(Int(blk.capacityBytes) >= expected.count)
        let chunks = expected.count / Self.chunkBytes
        var mismatched: [Int] = []
        try pipelined(blk, write: false, chunks: chunks, chunkBytes: Self.chunkBytes, depth: 8, prepare: { _, _ in }) { chunk, b in
            let same = expected.withUnsafeBytes { memcmp($0.baseAddress! + chunk * Self.chunkBytes, b.pointer, Self.chunkBytes) == 0 }
            if !same { mismatched.append(chunk) }
        }
        #expect(mismatched.isEmpty, "chunks that differ from the host's file: \(mismatched.prefix(10))")
    }

    /// Every block of the image written with a known pattern over every queue, flushed, read back
    /// and compared; then the same again with a second generation (nothing stale survives).
    @Test func wholeImageWrittenFlushedAndReadBackOverEveryQueue() throws {
        let blk = try RealDevice.open()
        #expect(blk.interruptMode == RealDevice.interrupts)
        let chunks = Int(blk.capacityBytes) / Self.chunkBytes
        #expect(chunks >= 1024, "a 64 MiB image")
        let pattern = ChunkPattern(chunkBytes: Self.chunkBytes)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkBytes, alignment: 64)
        defer { scratch.deallocate() }
        for gen in UInt64(1)...2 {
            try pipelined(blk, write: true, chunks: chunks, chunkBytes: Self.chunkBytes, depth: 8,
                          prepare: { pattern.fill($1.pointer, chunk: $0, gen: gen) }, check: { _, _ in })
            if blk.negotiated.contains(BlockFeature.flush) { try blk.flush() }
            var bad: [Int] = []
            try pipelined(blk, write: false, chunks: chunks, chunkBytes: Self.chunkBytes, depth: 8, prepare: { _, _ in }) { chunk, b in
                if !pattern.matches(b.pointer, chunk: chunk, gen: gen, scratch: scratch) { bad.append(chunk) }
            }
            #expect(bad.isEmpty, "generation \(gen): chunks that read back wrong: \(bad.prefix(10))")
        }
        var used: UInt64 = 0, interrupts: UInt64 = 0
        for q in 0..<blk.queueCount {
            let c = blk.counters(queue: q)
            #expect(c.buffersUsed == c.buffersAdded)
            used += c.buffersUsed
            interrupts += c.interrupts
        }
        #expect(used >= UInt64(4 * chunks))
        if !RealDevice.interrupts { #expect(interrupts == 0) }
        print("real-device: \(blk.queueCount) queue(s) of \(blk.device.queues.map(\.size)), \(used) requests, \(interrupts) interrupts, "
              + "negotiated \(FeatureNames.names(blk.negotiated, deviceType: .block).joined(separator: ","))")
    }

    /// Teardown releases everything: after an attach, I/O in MSI-X mode and release, the process
    /// holds the same fds and no mapping of the VFIO device or of DMA memory.
    @Test func teardownLeavesNoFDOrMapping() throws {
        func fds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
        func vfioMappings() -> Int {
            let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
            return maps.split(separator: "\n").filter { $0.contains("vfio") || $0.contains("anon_hugepage") }.count
        }
        let (fdsBefore, mapsBefore) = (fds(), vfioMappings())
        var backend = ""
        do {
            let function = try RealDevice.function()
            backend = function.context.summary
            var options = BlockAttachOptions()
            options.interrupts = true
            let blk = try BlockDevice(transport: try PCITransport(function: function), options: options)
            let b = try blk.allocateBuffer(bytes: 4096)
            try blk.read(sector: 0, into: b)
            #expect(fds() > fdsBefore + 2)  // container and group or iommufd, device, eventfds
        }
        #expect(fds() == fdsBefore)
        #expect(vfioMappings() == mapsBefore)
        print("real-device: teardown: \(fds()) fds before and after, \(backend)")
    }

    /// VIRTIO_F_RING_RESET on a device we did not write: reset queue 0 mid-life, then I/O works.
    @Test func ringResetThenIOWorks() throws {
        let blk = try RealDevice.open()
        try #require(blk.negotiated.contains(VirtioFeature.ringReset), "QEMU offers VIRTIO_F_RING_RESET; it was not negotiated")
        let b = try blk.allocateBuffer(bytes: 4096)
        fill(b, lba: 99, gen: 3)
        try blk.write(sector: 8, from: b)
        try blk.resetQueue(0)
        b.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        try blk.read(sector: 8, into: b)
        #expect(bytes(b) == patternBytes(lba: 99, gen: 3, length: 4096))
    }
}
