import CMallocCount
import Testing
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice

/// The driver's request path (submit, kick, poll) allocates nothing per request, counted by the
/// malloc interposer for this thread. The soft device serves the requests inside kick, so the
/// device's own path is measured separately.
@Suite(.leakChecked) struct AllocationTests {
    @Test(arguments: ["packed=on,in_order=on", "packed=off,in_order=off"])
    func steadyStateRequestPathAllocatesNothing(spec: String) throws {
        let (_, blk) = try attach("size=4M," + spec)
        let data = try blk.allocateBuffer(bytes: 16 * 4096)
        var submitAllocs: UInt64 = 0, kickAllocs: UInt64 = 0, pollAllocs: UInt64 = 0
        try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws(BlockError) in
            for round in 0..<2000 {
                let a0 = mc_thread_count()
                for i in 0..<16 {
                    let e = BufferElement(address: data.deviceAddress + UInt64(i * 4096), length: 4096)
                    try q.submit(i & 1 == 0 ? .read : .write, sector: UInt64((round * 16 + i) % 1024) * 8, data: e, tag: UInt64(i))
                }
                let a1 = mc_thread_count()
                q.kick()
                let a2 = mc_thread_count()
                var n = 0
                while let c = try q.poll() { n += 1; _ = c }
                let a3 = mc_thread_count()
                #expect(n == 16)
                if round >= 100 {  // after warm-up (lazy metadata, first-use caches)
                    submitAllocs += a1 - a0
                    kickAllocs += a2 - a1
                    pollAllocs += a3 - a2
                }
            }
        }
        #expect(submitAllocs == 0, "submit allocated \(submitAllocs) times")
        #expect(pollAllocs == 0, "poll allocated \(pollAllocs) times")
        // kick includes the software device serving 16 requests in this thread.
        #expect(kickAllocs == 0, "kick (driver doorbell + soft device) allocated \(kickAllocs) times")
    }
}

/// Runs `rounds` batches of 16 4 KiB reads and writes (submit, kick, poll) on queue 0 and returns
/// this thread's heap allocations and the request count after 100 warm-up rounds; `warmedUp` runs
/// once at that point (a test samples the other side's counter there).
func countRequestAllocations<T>(_ blk: BlockDevice<T>, rounds: Int = 1500,
                                warmedUp: () -> Void = {}) throws -> (allocations: UInt64, requests: UInt64) {
    let data = try blk.allocateBuffer(bytes: 16 * 4096)
    var allocations: UInt64 = 0, requests: UInt64 = 0, short = 0
    try blk.withQueue(0) { (q: inout BlockQueue<T>) throws(BlockError) in
        for round in 0..<rounds {
            if round == 100 { warmedUp() }
            let t0 = mc_thread_count()
            for i in 0..<16 {
                let e = BufferElement(address: data.deviceAddress + UInt64(i * 4096), length: 4096)
                try q.submit(i & 1 == 0 ? .read : .write, sector: UInt64((round * 16 + i) % 1024) * 8, data: e, tag: UInt64(i))
            }
            q.kick()
            var n = 0
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while n < 16, monotonicNanoseconds() < deadline { while try q.poll() != nil { n += 1 } }
            let t1 = mc_thread_count()
            if n != 16 { short += 1 }  // (counted, not expected here: an expectation allocates)
            if round >= 100 {
                allocations += t1 - t0
                requests += 16
            }
        }
    }
    #expect(short == 0, "\(short) batches did not complete within 5 s")
    return (allocations, requests)
}
