import Testing
import TestSupport
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice

/// Recovery: the device sets DEVICE_NEEDS_RESET with requests in flight; the driver resets and
/// re-initialises it, resubmits exactly the requests that had not completed, and every byte of
/// the disk ends as the model says. No request is lost or completed twice.
@Suite(.leakChecked) struct RecoveryTests {
    @Test(arguments: ["packed=on,in_order=on", "packed=on,in_order=off", "packed=off,in_order=on", "packed=off,in_order=off"])
    func needsResetMidIOIsRecovered(rings: String) throws {
        var faults = SoftFaults()
        faults.needsResetAfterRequests = 300
        let (f, blk) = try attach("size=2M,queue_size=64," + rings, faults: faults)
        let blocks = 4096, depth = 16, maxCount = 4
        var generation = [UInt64](repeating: 0, count: blocks)
        var busy = [Bool](repeating: false, count: blocks)
        let buffers = try blk.allocateBuffer(bytes: depth * maxCount * 512)
        struct Pending { let block: Int, count: Int, write: Bool, gen: UInt64, slot: Int }
        var pending: [UInt64: Pending] = [:]
        var free = Array(0..<depth)
        var rng = SplitMix(seed: 0x5EC0)
        var nextTag: UInt64 = 1, completed = 0, recoveries = 0, resubmitted = 0, idle = 0
        func region(_ slot: Int, _ count: Int) -> DMARegion { buffers.slice(offset: slot * maxCount * 512, length: count * 512) }
        func submit(_ q: inout BlockQueue<SoftTransport>, _ tag: UInt64, _ p: Pending) throws {
            let r = region(p.slot, p.count)
            try q.submit(p.write ? .write : .read, sector: UInt64(p.block),
                         data: BufferElement(address: r.deviceAddress, length: UInt32(r.length)), tag: tag)
        }
        while completed < 1500 {
            var moved = false
            try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws in
                while let slot = free.last {
                    let count = Int(rng.next() % UInt64(maxCount)) + 1
                    let start = Int(rng.next() % UInt64(blocks - count))
                    if busy[start..<start + count].contains(true) { break }
                    let write = rng.next() % 2 == 0
                    let gen = write ? rng.next() | 1 : generation[start]
                    let r = region(slot, count)
                    if write {
                        for i in 0..<count { fill(r.slice(offset: i * 512, length: 512), lba: UInt64(start + i), gen: gen) }
                    } else {
                        r.pointer.initializeMemory(as: UInt8.self, repeating: 0xEE, count: r.length)
                    }
                    for b in start..<start + count { busy[b] = true }
                    let p = Pending(block: start, count: count, write: write, gen: gen, slot: slot)
                    try submit(&q, nextTag, p)
                    pending[nextTag] = p
                    nextTag += 1
                    free.removeLast()
                }
                q.kick()
                while let c = try q.poll() {
                    let removed = pending.removeValue(forKey: c.tag)
                    let p = try #require(removed, "tag \(c.tag) completed twice or never issued")
                    #expect(c.result == .ok)
                    if p.write {
                        for b in p.block..<p.block + p.count { generation[b] = p.gen }
                    } else {
                        for i in 0..<p.count {
                            let b = p.block + i
                            let want = generation[b] == 0 ? [UInt8](repeating: 0, count: 512)
                                : patternBytes(lba: UInt64(b), gen: generation[b], length: 512)
                            #expect(bytes(region(p.slot, p.count).slice(offset: i * 512, length: 512)) == want, "block \(b)")
                        }
                    }
                    for b in p.block..<p.block + p.count { busy[b] = false }
                    free.append(p.slot)
                    completed += 1
                    moved = true
                }
            }
            idle = moved ? 0 : idle + 1
            guard idle > 100 else { continue }
            // Nothing moves: ask the device why.
            do { try blk.device.checkHealth() } catch {
                #expect(error == .deviceNeedsReset)
                let lost = try blk.recover()
                recoveries += 1
                #expect(Set(lost) == Set(pending.keys), "exactly the requests in flight come back")
                try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws in
                    for tag in lost.sorted() { try submit(&q, tag, pending[tag]!) }
                    q.kick()
                }
                resubmitted += lost.count
                idle = 0
                continue
            }
            Issue.record("no progress and a healthy device")
            break
        }
        #expect(recoveries == 1 && resubmitted > 0 && pending.isEmpty)
        // The whole disk, read back synchronously, is what the model says.
        let check = try blk.allocateBuffer(bytes: 64 * 512)
        for start in stride(from: 0, to: blocks, by: 64) {
            try blk.read(sector: UInt64(start), into: check)
            for i in 0..<64 {
                let g = generation[start + i]
                let want = g == 0 ? [UInt8](repeating: 0, count: 512) : patternBytes(lba: UInt64(start + i), gen: g, length: 512)
                #expect(bytes(check.slice(offset: i * 512, length: 512)) == want, "block \(start + i)")
            }
        }
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        print("recovery[\(rings)]: \(completed) requests, \(resubmitted) resubmitted after \(recoveries) DEVICE_NEEDS_RESET")
    }

    @Test func recoveryWithNothingInFlightKeepsTheDeviceUsable() throws {
        let (f, blk) = try attach("")
        #expect(try blk.recover().isEmpty)
        #expect(blk.device.has(VirtioFeature.ringPacked) && f.status == 0x0F)
        let b = try blk.allocateBuffer(bytes: 512)
        fill(b, lba: 3, gen: 9)
        try blk.write(sector: 3, from: b)
        let r = try blk.allocateBuffer(bytes: 512)
        try blk.read(sector: 3, into: r)
        #expect(bytes(r) == bytes(b))
    }

    /// A synchronous request that failed on a hostile used entry has reset the device already;
    /// recovery still renegotiates what attach negotiated (it once compared with the reset's empty set).
    @Test func recoveryAfterAFailedSynchronousRequest() throws {
        var o = BlockAttachOptions()
        o.timeoutMilliseconds = 300
        let (_, blk) = try attach("fault=used_id_range,fault_after=2", options: o)
        let b = try blk.allocateBuffer(bytes: 512)
        var failed = false
        for i in 0..<8 {
            do { try blk.read(sector: UInt64(i), into: b) } catch { failed = true; break }
        }
        #expect(failed, "the fault struck")
        _ = try blk.recover()
        try blk.read(sector: 0, into: b)
        #expect(blk.negotiated == blk.attachedFeatures)
    }
}
