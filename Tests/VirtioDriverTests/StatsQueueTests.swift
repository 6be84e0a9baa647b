import Foundation
import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice
import VirtioWire

/// The statistics queue protocol against the software balloon and the blk draft: one buffer
/// outstanding, re-posted after each request, whole little-endian 10-byte entries, known tags,
/// at rapid and slow request rates.
@Suite(.leakChecked) struct StatsQueueTests {
    func balloon(_ spec: String = "stats_interval=0") throws -> (SoftPCIFunction<SoftBalloon>, BalloonDevice<PCITransport<SoftPCIFunction<SoftBalloon>>>) {
        let f = try SoftPCIFunction.balloon(try SoftBalloonOptions(parsing: spec.split(separator: ",").map(String.init)))
        return (f, try BalloonDevice(transport: try PCITransport(function: f)))
    }

    @Test func balloonAnswersEveryRequestWithOneBufferOutstanding() throws {
        let (f, b) = try balloon()
        var fake: UInt64 = 0
        b.provider = {
            fake += 1
            return [StatEntry(tag: BalloonStatTag.freeMemory, value: 0x1122_3344_5566_7788 &+ fake),
                    StatEntry(tag: BalloonStatTag.totalMemory, value: 1 << 40)]
        }
        let sink = f.personality.stats
        // Initialisation posted the first buffer: the device holds it, nothing is pending.
        #expect(sink.holding && sink.updates == 1)
        #expect(try !b.poll(), "no request yet")
        // Rapid: 500 requests back to back; each is answered before the next.
        for i in 1...500 {
            #expect(f.requestStatistics())
            #expect(!f.requestStatistics(), "the device holds no second buffer")
            #expect(try b.poll())
            #expect(sink.holding && sink.updates == i + 1)
            #expect(sink.lastEntries == [StatEntry(tag: 4, value: 0x1122_3344_5566_7788 &+ UInt64(i)), StatEntry(tag: 5, value: 1 << 40)])
        }
        // Slow: a few with pauses, and polls that find nothing in between.
        for _ in 0..<3 {
            usleep(20_000)
            #expect(try !b.poll())
            #expect(f.requestStatistics())
            #expect(try b.poll())
        }
        #expect(b.stats!.requests == 503)
        #expect(b.stats!.counters.buffersAdded == 504, "the initial buffer and one per request")
        #expect(f.log.violations.isEmpty && f.personality.log.violations.isEmpty,
                "\(f.log.violations) \(f.personality.log.violations)")
    }

    @Test func realMemoryStatisticsUseKnownTagsAndLittleEndianEntries() throws {
        let (f, b) = try balloon()
        #expect(f.requestStatistics())
        #expect(try b.poll())
        let got = f.personality.stats.lastEntries
        #expect(got.map(\.tag) == Array(0...9))
        let total = got.first { $0.tag == BalloonStatTag.totalMemory }!.value
        let free = got.first { $0.tag == BalloonStatTag.freeMemory }!.value
        // /proc/meminfo in bytes; free never exceeds total.
        #expect(total > 1 << 20 && free <= total)
        // The wire form: le16 tag then le64 value, packed.
        #expect(StatEntry.encode([StatEntry(tag: 5, value: 0x0102_0304_0506_0708)])
                == [5, 0, 8, 7, 6, 5, 4, 3, 2, 1])
        #expect(StatEntry.decode([5, 0, 8, 7, 6, 5, 4, 3, 2, 1]) == [StatEntry(tag: 5, value: 0x0102_0304_0506_0708)])
        #expect(StatEntry.decode([1, 2, 3]) == nil)
        #expect(f.personality.log.violations.isEmpty)
    }

    @Test func balloonWithoutTheFeatureHasNoStatisticsQueue() throws {
        let f = try SoftPCIFunction.balloon(try SoftBalloonOptions(parsing: ["stats_vq=off"]))
        #expect(throws: VirtioError.requiredFeatureNotOffered(["VIRTIO_BALLOON_F_STATS_VQ"])) {
            _ = try BalloonDevice(transport: try PCITransport(function: f))
        }
        let b = try BalloonDevice(transport: try PCITransport(function: f), requireStats: false)
        #expect(b.stats == nil && !f.requestStatistics())
    }

    @Test func blkDraftQueueNeedsBothSidesAndAnswersFromTheDriversCounters() throws {
        // The device offers bit 23; a driver not told to accept it never negotiates it.
        let (plainDevice, plain) = try attach("stats_vq=on,stats_interval=0")
        #expect(plainDevice.offeredFeatures.contains(BlockFeature.draftStatsVQ))
        #expect(!plain.negotiated.contains(BlockFeature.draftStatsVQ) && plain.stats == nil)
        #expect(!plainDevice.offeredFeatures.contains(BlockFeature.configWCE), "never on the seed's bit 11")
        var o = BlockAttachOptions()
        o.draftStatsQueue = true
        let (f, blk) = try attach("stats_vq=on,stats_interval=0,queues=2", options: o)
        #expect(blk.stats?.queueIndex == 2, "after the request queues")
        blk.setAccounting(true)
        try blk.startStatistics()
        let buf = try blk.allocateBuffer(bytes: 8 * 512)
        for i in 0..<10 { try blk.write(sector: UInt64(i * 8), from: buf) }
        for i in 0..<4 { try blk.read(sector: UInt64(i * 8), into: buf) }
        #expect(f.requestStatistics())
        #expect(try blk.pollStatistics())
        let e = f.personality.stats.lastEntries
        #expect(e.map(\.tag) == Array(0...10))
        #expect(e[0].value == 4 && e[2].value == 32, "READ_IO, READ_SECTORS")
        #expect(e[4].value == 10 && e[6].value == 80, "WRITE_IO, WRITE_SECTORS")
        #expect(e[8].value == 0, "IN_FLIGHT")
        #expect(f.personality.log.violations.isEmpty && f.log.violations.isEmpty)
    }
}
