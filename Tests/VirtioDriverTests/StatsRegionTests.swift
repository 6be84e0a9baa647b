import Foundation
import Synchronization
import Testing
import VirtioCore

/// The statistics region: layout byte for byte, consistent snapshots under a concurrent writer,
/// stale writers, and files that are not regions.
@Suite(.serialized, .leakChecked) struct StatsRegionTests {
    let path = "/dev/shm/virtio-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).stats"

    func u32(_ b: [UInt8], _ at: Int) -> UInt32 { b[at..<at + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
    func u16(_ b: [UInt8], _ at: Int) -> UInt16 { b[at..<at + 2].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } }

    @Test func layoutMatchesHandComputedOffsets() throws {
        let l = StatsLayout(id: "virtio-blk soft:blk", stats: [
            StatDescriptor(name: "a"),
            StatDescriptor(name: "h", type: .logHistogram, unit: .seconds, exponent: -9, size: 4),
        ])
        let b = l.encoded
        // Header: flags, name_size 48, 5 descriptors, id at 24, descriptors at 72, data at 72 + 5*64 = 392.
        #expect([u32(b, 0), u32(b, 4), u32(b, 8), u32(b, 12), u32(b, 16), u32(b, 20)] == [0, 48, 5, 24, 72, 392])
        #expect(b.count == 392 + 8 * 8)
        #expect(Array(b[24..<43]) == Array("virtio-blk soft:blk".utf8) && b[43] == 0)
        // Descriptor 0: seqcount, INSTANT (1), size 1 at offset 0.
        #expect(u32(b, 72) == 1 && u16(b, 78) == 1 && u32(b, 80) == 0 && b[88] == UInt8(ascii: "s"))
        // Descriptor 3 ("a"): CUMULATIVE, offset 24. Descriptor 4 ("h"): LOG_HIST | SECONDS<<4 = 0x24, exp -9, 4 values at 32.
        let d3 = 72 + 3 * 64, d4 = 72 + 4 * 64
        #expect(u32(b, d3) == 0 && u32(b, d3 + 8) == 24 && b[d3 + 16] == UInt8(ascii: "a") && b[d3 + 17] == 0)
        #expect(u32(b, d4) == 0x24 && u16(b, d4 + 4) == UInt16(bitPattern: -9) && u16(b, d4 + 6) == 4 && u32(b, d4 + 8) == 32)
        #expect(try StatsLayout.parse(b) == l)
    }

    @Test func readersNeverSeeATornSnapshot() throws {
        let stats = (0..<64).map { StatDescriptor(name: "v\($0)") }
        let w = try StatsRegionWriter(path: path, layout: StatsLayout(id: "torn", stats: stats))
        defer { w.remove() }
        let r = try StatsRegionReader(path: path)
        final class Flag: Sendable { let done = Atomic<Bool>(false) }
        let flag = Flag()
        let writer = Thread {
            var k: UInt64 = 0
            while !flag.done.load(ordering: .acquiring) {
                k &+= 1
                w.update { v in for i in 3..<67 { v[i] = k } }
                if k % 4 == 0 { usleep(10) }  // bursts of back-to-back updates, with a breath between
            }
        }
        writer.start()
        var snapshots = 0, distinct = Set<UInt64>()
        // Until enough snapshots of a moving writer were taken (bounded: a loaded machine is slow).
        let end = Date().addingTimeInterval(20)
        while Date() < end, snapshots < 300 || distinct.count < 30 {
            let s = try r.snapshot()
            let vals = Array(s.values[3...])
            #expect(vals.allSatisfy { $0 == vals[0] }, "torn snapshot: \(Set(vals))")
            if vals.contains(where: { $0 != vals[0] }) { break }
            distinct.insert(vals[0])
            snapshots += 1
        }
        flag.done.store(true, ordering: .releasing)
        usleep(10_000)
        #expect(snapshots > 100 && distinct.count > 10, "the reader saw the writer move (\(snapshots) snapshots, \(distinct.count) values)")
        #expect(r.staleReason == nil)
    }

    @Test func deadWriterAndReplacedFilesAreStale() throws {
        let w = try StatsRegionWriter(path: path, layout: StatsLayout(id: "stale", stats: [StatDescriptor(name: "x")]))
        let r = try StatsRegionReader(path: path)
        #expect(r.staleReason == nil)
        // A second writer may not take over a live region.
        #expect(throws: StatsError.self) { _ = try StatsRegionWriter(path: path, layout: StatsLayout(id: "b", stats: [])) }
        w.update { v in v[StatsLayout.pidIndex] = 0x3FFF_FFF0 }  // no such process
        #expect(r.staleReason?.contains("is gone") == true)
        w.update { v in v[StatsLayout.pidIndex] = UInt64(getpid()) }
        r.staleAfterNanoseconds = 1_000_000
        usleep(20_000)
        #expect(r.staleReason?.contains("has not updated it") == true)
        r.staleAfterNanoseconds = 5_000_000_000
        w.remove()
        #expect(r.staleReason == "the file was removed")
    }

    @Test func aReplacedRegionIsReopenedAndARemovedOneIsNot() throws {
        let first = try StatsRegionWriter(path: path, layout: StatsLayout(id: "first", stats: [StatDescriptor(name: "x")]))
        let r = try StatsRegionReader(path: path)
        #expect(r.layout.statistics.map(\.name) == ["x"])
        #expect(r.reopenedIfReplaced() == nil, "a live region is not reopened")
        first.remove()
        #expect(r.staleness == .fileRemoved && r.staleness?.fileChanged == true)
        #expect(r.reopenedIfReplaced() == nil, "nothing to reopen at a removed path")
        let second = try StatsRegionWriter(path: path, layout: StatsLayout(id: "second", stats: [StatDescriptor(name: "y")]))
        #expect(r.staleness == .fileReplaced)
        let fresh = try #require(r.reopenedIfReplaced())
        #expect(fresh.layout.id == "second" && fresh.layout.statistics.map(\.name) == ["y"])
        #expect(fresh.staleness == nil)
        second.remove()
    }

    @Test func malformedFilesAreRefusedWithAReason() throws {
        let good = StatsLayout(id: "m", stats: [StatDescriptor(name: "x")]).encoded
        func refused(_ b: [UInt8]) -> Bool { (try? StatsLayout.parse(b)) == nil }
        #expect(refused(Array(good.prefix(10))))
        var bad = good
        bad[4] = 3  // name_size 3
        #expect(refused(bad))
        bad = good
        bad[20] = 0xFF; bad[21] = 0xFF  // data offset past the end
        #expect(refused(bad))
        bad = good
        bad[72 + 3 * 64 + 8] = 0xF8  // descriptor x's offset outside the data block
        #expect(refused(bad))
        bad = good
        bad[72] = 0x0F  // type 15
        #expect(refused(bad))
        #expect(throws: StatsError.self) { _ = try StatsRegionReader(path: "/dev/null") }
    }
}
