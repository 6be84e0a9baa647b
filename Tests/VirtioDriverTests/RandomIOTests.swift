import Foundation
import TestSupport
import Testing
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice

/// 100k random reads and writes over 2 queues with requests in flight, checked against a model;
/// flush, discard and write-zeroes semantics.
@Suite(.leakChecked) struct RandomIOTests {
    struct Pending {
        let block: Int, count: Int, write: Bool, gen: UInt64, slot: Int
    }

    @Test func hundredThousandVerifiedRequestsOverTwoQueues() throws {
        var o = BlockAttachOptions()
        o.queues = 2
        let (f, blk) = try attach("size=4M,queues=2,queue_size=128", options: o)
        #expect(blk.queueCount == 2)
        let blocks = 8192  // of 512 bytes
        let maxCount = 4
        let depth = 16
        var generation = [UInt64](repeating: 0, count: blocks)   // 0: never written (zeroes)
        var busy = [Bool](repeating: false, count: blocks)
        let buffers = try blk.allocateBuffer(bytes: 2 * depth * maxCount * 512)
        var pending: [[Int: Pending]] = [[:], [:]]
        var freeSlots: [[Int]] = [Array(0..<depth), Array(0..<depth)]
        var rng = SplitMix(seed: 0xB10C)
        var nextTag: UInt64 = 0
        var done = 0, reads = 0, writes = 0
        let total = 100_000

        func region(_ q: Int, _ slot: Int, _ count: Int) -> DMARegion {
            buffers.slice(offset: (q * depth + slot) * maxCount * 512, length: count * 512)
        }
        func pattern(_ r: DMARegion, block: Int, gen: UInt64) {
            for i in 0..<(r.length / 512) { fill(r.slice(offset: i * 512, length: 512), lba: UInt64(block + i), gen: gen) }
        }

        var submitted = 0
        while done < total {
            for q in 0..<2 {
                try blk.withQueue(q) { (queue: inout BlockQueue<SoftTransport>) throws in
                    var added = 0
                    while submitted < total, let slot = freeSlots[q].popLast() {
                        let count = Int(rng.next() % UInt64(maxCount)) + 1
                        let start = Int(rng.next() % UInt64(blocks - count))
                        if busy[start..<start + count].contains(true) { freeSlots[q].append(slot); break }
                        let write = rng.next() & 1 == 0
                        var gen = generation[start]
                        let r = region(q, slot, count)
                        if write {
                            gen = rng.next() | 1
                            pattern(r, block: start, gen: gen)
                        } else {
                            r.pointer.initializeMemory(as: UInt8.self, repeating: 0xEE, count: r.length)
                        }
                        for b in start..<start + count { busy[b] = true }
                        let tag = nextTag
                        nextTag += 1
                        try queue.submit(write ? .write : .read, sector: UInt64(start),
                                         data: BufferElement(address: r.deviceAddress, length: UInt32(r.length)), tag: tag)
                        pending[q][Int(tag)] = Pending(block: start, count: count, write: write, gen: gen, slot: slot)
                        submitted += 1
                        added += 1
                    }
                    if added > 0 { queue.kick() }
                    while let c = try queue.poll() {
                        let p = pending[q].removeValue(forKey: Int(c.tag))!
                        #expect(c.result == .ok)
                        let r = region(q, p.slot, p.count)
                        if p.write {
                            for b in p.block..<p.block + p.count { generation[b] = p.gen }
                            writes += 1
                        } else {
                            // Each block read back is what the model says was last written there.
                            for i in 0..<p.count {
                                let got = r.slice(offset: i * 512, length: 512)
                                let b = p.block + i
                                if generation[b] == 0 {
                                    #expect(bytes(got).allSatisfy { $0 == 0 }, "block \(b) should be zeroes")
                                } else {
                                    #expect(bytes(got) == patternBytes(lba: UInt64(b), gen: generation[b], length: 512),
                                            "block \(b) read back wrong data")
                                }
                            }
                            reads += 1
                        }
                        for b in p.block..<p.block + p.count { busy[b] = false }
                        freeSlots[q].append(p.slot)
                        done += 1
                    }
                }
            }
        }
        #expect(done == total && reads > 40_000 && writes > 40_000)
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        #expect(blk.counters(queue: 0).buffersUsed > 40_000 && blk.counters(queue: 1).buffersUsed > 40_000)
    }

    @Test(arguments: ["packed=on,in_order=on", "packed=off,in_order=off"])
    func discardAndWriteZeroesReadBackZeroes(spec: String) throws {
        let (f, blk) = try attach("size=1M," + spec)
        let w = try blk.allocateBuffer(bytes: 8 * 512), r = try blk.allocateBuffer(bytes: 8 * 512)
        fill(w, lba: 0, gen: 3)
        try blk.write(sector: 16, from: w)
        try blk.discard(sector: 18, sectors: 2)
        try blk.writeZeroes(sector: 21, sectors: 1, unmap: true)
        try blk.read(sector: 16, into: r)
        let got = bytes(r), want = bytes(w)
        for s in 0..<8 {
            let sector = Array(got[s * 512..<(s + 1) * 512])
            if [2, 3, 5].contains(s) {
                #expect(sector.allSatisfy { $0 == 0 }, "sector \(16 + s) not zero")
            } else {
                #expect(sector == Array(want[s * 512..<(s + 1) * 512]))
            }
        }
        #expect(f.personality.counters.discards == 1 && f.personality.counters.writeZeroes == 1)
        // Out of range is refused by the driver before the device sees it.
        #expect(throws: BlockError.outOfRange(sector: 2047, sectors: 2, capacity: 2048)) { try blk.discard(sector: 2047, sectors: 2) }
        // Without the feature the driver refuses; the device would answer UNSUPP.
        let (_, plain) = try attach("size=1M,discard=off,write_zeroes=off")
        #expect(throws: BlockError.notSupported("VIRTIO_BLK_F_DISCARD (discard)")) { try plain.discard(sector: 0, sectors: 1) }
    }

    @Test func flushMakesWritesDurableInTheBackingFile() throws {
        let path = NSTemporaryDirectory() + "virtio-flush-\(getpid()).img"
        defer { unlink(path) }
        let (f, blk) = try attach("size=1M,file=\(path)")
        let w = try blk.allocateBuffer(bytes: 4096)
        fill(w, lba: 5, gen: 9)
        try blk.write(sector: 40, from: w)
        try blk.flush()
        #expect(f.personality.counters.flushes == 1)
        // Read the file itself, not through the device.
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(onDisk.count == 1 << 20)
        #expect(Array(onDisk[40 * 512..<40 * 512 + 4096]) == bytes(w))
        // Without FLUSH negotiated the driver says so instead of sending it.
        var o = BlockAttachOptions()
        o.policy.forcedOff = [BlockFeature.flush]
        let (_, noFlush) = try attach("size=1M", options: o)
        #expect(throws: BlockError.notSupported("VIRTIO_BLK_F_FLUSH (flush)")) { try noFlush.flush() }
    }

    @Test func requestChecksBeforeSubmission() throws {
        let (f, blk) = try attach("size=1M,block_size=4096,ro=off")
        let b = try blk.allocateBuffer(bytes: 4096)
        #expect(throws: BlockError.outOfRange(sector: 2048, sectors: 8, capacity: 2048)) { try blk.read(sector: 2048, into: b) }
        #expect(throws: BlockError.misaligned(what: "sector", value: 3, blockSize: 4096)) { try blk.read(sector: 3, into: b) }
        #expect(throws: BlockError.misaligned(what: "length", value: 512, blockSize: 4096)) {
            try blk.read(sector: 0, into: b.slice(offset: 0, length: 512))
        }
        #expect(f.personality.counters.reads == 0)
        let (_, ro) = try attach("size=1M,ro=on")
        #expect(throws: BlockError.readOnly) { try ro.write(sector: 0, from: b) }
    }

    @Test func invalidStatusByteIsAProtocolError() throws {
        var faults = SoftFaults()
        faults.statusOverride = 0x7F
        let (_, blk) = try attach("size=1M", faults: faults)
        let b = try blk.allocateBuffer(bytes: 512)
        #expect(throws: BlockError.invalidStatus(0x7F)) { try blk.read(sector: 0, into: b) }
        faults.statusOverride = 1
        let (_, failing) = try attach("size=1M", faults: faults)
        #expect(throws: BlockError.ioError(sector: 0)) { try failing.read(sector: 0, into: b) }
    }
}
