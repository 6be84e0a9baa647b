import VirtioCore
import VirtioDrivers
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// The blocks the suite reads and writes, and what each should hold. Blocks whose contents are
/// unknown (the first read failed) are written before they are checked.
final class TestArea {
    /// Bytes per request: a self-checking 4 KiB block, a multiple of every logical block size.
    static let blockBytes = BlockImage.size
    let blocks: Int
    /// What the disk held before the suite (restored at the end).
    var original: [[UInt8]?]
    var expected: [[UInt8]?]
    var written = false
    var generation: UInt32 = 0

    init(blocks: Int) {
        self.blocks = blocks
        original = Array(repeating: nil, count: blocks)
        expected = original
    }

    func sector(_ block: Int) -> UInt64 { UInt64(block * Self.blockBytes / 512) }

    /// Fills a read buffer with bytes that differ from `expected` everywhere (0xA5 when unknown).
    func poison(_ d: DMARegion, unlike expected: [UInt8]?) {
        if let expected {
            for i in 0..<Self.blockBytes { d.pointer.storeBytes(of: ~expected[i], toByteOffset: i, as: UInt8.self) }
        } else {
            d.pointer.initializeMemory(as: UInt8.self, repeating: 0xA5, count: Self.blockBytes)
        }
    }

    /// A self-checking block (`BlockImage`) no other (block, generation) produces: a block read
    /// back from the wrong place or an older write is caught.
    func pattern(block: Int, generation: UInt32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.blockBytes)
        out.withUnsafeMutableBytes {
            BlockImage.fill(DMARegion(pointer: $0.baseAddress!, deviceAddress: 0, length: Self.blockBytes), block: block, generation: generation)
        }
        return out
    }
}

/// What one exercise did.
struct ExerciseResult {
    var requests = 0
    var batches = 0
    var maxInFlight = 0
    var finding: CheckFinding?
}

/// Verified I/O on queue 0 of an attached block device, in batches: a batch of writes to
/// distinct blocks, then a batch reading them back; every completion checked for status,
/// order (IN_ORDER) and data.
struct BlockExercise<T: VirtioTransport> {
    let blk: BlockDevice<T>
    let area: TestArea
    let buffers: DMARegion
    let timeoutMilliseconds: Int
    /// Write as well as read (off for read-only devices and `--read-only`).
    let writes: Bool

    var slots: Int { buffers.length / TestArea.blockBytes }

    /// Requests that fit the ring at once when everything was polled back.
    var fit: Int { max(1, min(slots, blk.queuePointer(0).pointee.singleSegmentRequestsFree)) }

    func buffer(_ i: Int) -> DMARegion { buffers.slice(offset: i * TestArea.blockBytes, length: TestArea.blockBytes) }

    /// Runs about `requests` requests starting at block `cursor`.
    func run(requests: Int, cursor start: Int = 0, depthLimit: Int = .max) -> ExerciseResult {
        var r = ExerciseResult()
        var cursor = start
        let inOrder = blk.negotiated.contains(VirtioFeature.inOrder)
        while r.requests < requests {
            let depth = min(slots, area.blocks, depthLimit, fit, requests - r.requests)
            let blocks = (0..<depth).map { (cursor + $0) % area.blocks }
            cursor += depth
            // A block is written only once what it held is known (it is put back at the end).
            if writes && blocks.allSatisfy({ area.original[$0] != nil }) {
                area.generation &+= 1
                let gen = area.generation
                for (i, b) in blocks.enumerated() {
                    let data = area.pattern(block: b, generation: gen)
                    data.withUnsafeBytes { buffer(i).pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                }
                area.written = true  // before the batch: a failed batch may still have written some
                if let f = batch(.write, blocks, inOrder: inOrder, &r) {
                    for b in blocks { area.expected[b] = nil }  // what landed is unknown now
                    r.finding = f
                    return r
                }
                for b in blocks { area.expected[b] = area.pattern(block: b, generation: gen) }
            }
            // Poison the buffers: a device that answers OK without moving the data must not pass.
            for (i, b) in blocks.enumerated() { area.poison(buffer(i), unlike: area.expected[b]) }
            if let f = batch(.read, blocks, inOrder: inOrder, &r) { r.finding = f; return r }
            for (i, b) in blocks.enumerated() {
                let got = Array(UnsafeRawBufferPointer(start: buffer(i).pointer, count: TestArea.blockBytes))
                if let want = area.expected[b] {
                    if got != want {
                        let at = (0..<got.count).first { got[$0] != want[$0] } ?? 0
                        r.finding = CheckFinding(.failure, clause: Clause.blkCompletes,
                            "block at sector \(area.sector(b)) read back different data (first difference at byte \(at))")
                        return r
                    }
                } else {
                    area.expected[b] = got
                    if area.original[b] == nil { area.original[b] = got }
                }
            }
        }
        return r
    }

    /// Submits `op` for each block (buffer i for block i), kicks once, and polls every one back.
    func batch(_ op: BlockOperation, _ blocks: [Int], inOrder: Bool, _ r: inout ExerciseResult) -> CheckFinding? {
        let q = blk.queuePointer(0)
        var submitted = 0
        for (i, b) in blocks.enumerated() {
            let d = buffer(i)
            do {
                try q.pointee.submit(op, sector: area.sector(b), data: BufferElement(address: d.deviceAddress, length: UInt32(d.length)),
                                     tag: UInt64(i))
            } catch {
                return Classify.finding(error)
            }
            submitted += 1
        }
        q.pointee.kick()
        r.maxInFlight = max(r.maxInFlight, submitted)
        r.batches += 1
        var done = 0
        var next: UInt64 = 0
        let deadline = monotonicMilliseconds() + UInt64(timeoutMilliseconds)
        var spins = 0
        while done < submitted {
            let c: BlockCompletion?
            do { c = try q.pointee.poll() } catch { return Classify.finding(error) }
            if let c {
                if inOrder, c.tag != next {
                    return CheckFinding(.must, clause: Clause.inOrder,
                        "request \(c.tag) of a batch of \(submitted) came back before request \(next)")
                }
                next = c.tag + 1
                if c.result != .ok { return Classify.finding(c.result, sector: area.sector(blocks[Int(c.tag)]), what: "\(op)") }
                done += 1
                r.requests += 1
                continue
            }
            spins += 1
            if spins & 255 == 0 {
                do { try blk.device.checkHealth() } catch { return Classify.finding(error) }
                if monotonicMilliseconds() > deadline {
                    return Classify.finding(BlockError.timeout(milliseconds: timeoutMilliseconds,
                                                     what: "\(submitted - done) of \(submitted) \(op)s"))
                }
                if spins > 4096 { usleep(50) }  // a slow (emulated) device: stop burning the CPU it needs
            }
        }
        // Once a batch too: a device that went away or needs a reset may still complete what it had.
        do { try blk.device.checkHealth() } catch { return Classify.finding(error) }
        return nil
    }
}

func monotonicMilliseconds() -> UInt64 { monotonicNanoseconds() / 1_000_000 }
