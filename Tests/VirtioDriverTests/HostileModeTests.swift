import Foundation
import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice

/// The software device's hostile modes (`fault=NAME`) against the whole block driver: no crash,
/// no hang (bounded), nothing completed twice, an error naming the rule, and the device left reset.
@Suite(.leakChecked) struct HostileModeTests {
    /// Runs reads until one fails (at most 40); returns the error and how many succeeded.
    func readUntilFailure(_ spec: String, timeoutMs: Int = 300) throws -> (BlockError?, Int, SoftPCIFunction<SoftBlock>) {
        var o = BlockAttachOptions()
        o.timeoutMilliseconds = timeoutMs
        let (f, blk) = try attach(spec + ",fault_after=4", options: o)
        let b = try blk.allocateBuffer(bytes: 4096)
        for i in 0..<40 {
            do { try blk.read(sector: UInt64(i * 8), into: b) } catch { return (error, i, f) }
        }
        return (nil, 40, f)
    }

    @Test(arguments: ["packed=on", "packed=off"])
    func ringViolationsAreNamedAndTheDeviceIsReset(layout: String) throws {
        // Split sees a duplicate as used idx moving past what is in flight.
        let cases: [(String, String)] = [
            ("used_id_range", "out of range"),
            ("len_overflow", "exceeds its"),
            ("flags_lie", layout == "packed=on" ? "inconsistent with used wrap counter" : "used idx jumped"),
        ] + (layout == "packed=off" ? [("dup_id", "used idx jumped")] : [])
        for (mode, words) in cases {
            let (error, ok, f) = try readUntilFailure("\(layout),fault=\(mode)")
            let text = "\(error.map { "\($0)" } ?? "no error")"
            #expect(error != nil && text.contains(words), "\(mode): \(text)")
            #expect(text.contains("queue broken"), "\(mode) names a broken queue: \(text)")
            #expect(ok >= 4, "\(mode): the requests before the fault completed")
            #expect(f.status == 0, "\(mode): the driver reset the device after the violation")
        }
    }

    /// Packed: a duplicate written where the driver looks next, after the id was re-issued, reads as
    /// the new request's completion whose status byte was never written, or as nothing; either
    /// way the request fails (bounded) and the device is reset.
    @Test func packedDuplicateFailsTheRequest() throws {
        let (e, ok, f) = try readUntilFailure("packed=on,fault=dup_id")
        #expect(e != nil && ok >= 4, "\(String(describing: e))")
        #expect(f.status == 0)
    }

    @Test func usedIndexJumpAndEarlyWrapFlipAreViolations() throws {
        let (e1, _, f1) = try readUntilFailure("packed=off,fault=idx_jump")
        #expect("\(e1!)".contains("used idx jumped") && f1.status == 0)
        // Packed: the used flags carry the next lap's wrap counter. The driver knows the AVAIL bit
        // it wrote there, so the flags are caught as inconsistent rather than waited on.
        let (e2, _, f2) = try readUntilFailure("packed=on,fault=idx_jump")
        #expect("\(e2.map { "\($0)" } ?? "")".contains("inconsistent with used wrap counter") && f2.status == 0)
    }

    @Test func neverCompletedRequestsTimeOutAndTheDeviceIsReset() throws {
        let start = Date()
        let (e, ok, f) = try readUntilFailure("fault=never_complete", timeoutMs: 200)
        guard case let .timeout(ms, what)? = e else { Issue.record("expected a timeout, got \(String(describing: e))"); return }
        #expect(ms == 200 && what.contains("read at sector") && ok == 4)
        #expect(f.status == 0)
        #expect(Date().timeIntervalSince(start) < 10)
    }

    @Test func needsResetAndSurpriseRemovalAreReported() throws {
        let (e1, _, f1) = try readUntilFailure("fault=needs_reset")
        #expect(e1 == .virtio(.deviceNeedsReset), "\(String(describing: e1))")
        #expect(f1.status == 0)
        let (e2, ok2, _) = try readUntilFailure("fault=status_ff")
        #expect(e2 == .virtio(.deviceGone), "\(String(describing: e2))")
        #expect(ok2 == 4)
        #expect("\(e2!)".contains("surprise removal"))
    }

    @Test func endlessConfigChurnFailsTheAttach() throws {
        #expect(throws: BlockError.self) { _ = try attach("fault=config_churn") }
        do { _ = try attach("fault=config_churn") } catch {
            #expect("\(error)".contains("config_generation"), "\(error)")
        }
    }

    /// Over vfio-user (the device works on its own thread, so the driver sleeps on the eventfd).
    @Test func aNotificationStormChangesNothingButTheCount() throws {
        let served = try ServedDevice(try softBlock("fault=notify_storm,fault_after=0"))
        defer { served.shutdown() }
        var o = BlockAttachOptions()
        o.interrupts = true
        let blk = try BlockDevice(transport: try served.transport(), options: o)
        let w = try blk.allocateBuffer(bytes: 4096), r = try blk.allocateBuffer(bytes: 4096)
        for i in 0..<100 {
            fill(w, lba: UInt64(i * 8), gen: 7)
            try blk.write(sector: UInt64(i * 8), from: w)
            try blk.read(sector: UInt64(i * 8), into: r)
            #expect(bytes(r) == bytes(w))
        }
        // Completions came with 64 unrequested signals each; the driver woke, found nothing extra, went on.
        #expect(blk.counters(queue: 0).interrupts > 64)
        #expect(served.server.device.log.violations.isEmpty && served.server.device.status == 0x0F)
    }

    @Test func aStatisticsBufferTheDriverNeverGaveIsAViolation() throws {
        var o = BlockAttachOptions()
        o.draftStatsQueue = true
        let (f, blk) = try attach("stats_vq=on,stats_interval=0,fault=stats_unasked", options: o)
        try blk.startStatistics()
        #expect(f.requestStatistics())
        #expect(throws: BlockError.self) { _ = try blk.pollStatistics() }
        do { _ = try blk.pollStatistics() } catch {
            #expect("\(error)".contains("queue broken"), "\(error)")
        }
    }

    /// The balloon takes the same `fault=` modes: a statistics buffer it never posted is refused by name.
    @Test func theBalloonTakesFaultModesToo() throws {
        let f = try SoftPCIFunction.balloon(try SoftBalloonOptions(parsing: ["stats_interval=0", "fault=stats_unasked"]))
        let b = try BalloonDevice(transport: try PCITransport(function: f))
        #expect(f.requestStatistics())
        #expect(throws: (any Error).self) { _ = try b.poll() }
        do { _ = try b.poll() } catch { #expect("\(error)".contains("queue broken"), "\(error)") }
        #expect(throws: SoftDeviceError.self) { _ = try SoftBalloonOptions(parsing: ["fault=needs_reset"]) }
    }

    @Test func unknownModesAreRefusedByName() {
        #expect(throws: SoftDeviceError.self) { _ = try SoftBlockOptions(parsing: ["fault=gremlins"]) }
        do { _ = try SoftBlockOptions(parsing: ["fault=gremlins"]) } catch {
            #expect("\(error)".contains("dup_id") && "\(error)".contains("status_ff"))
        }
    }
}
