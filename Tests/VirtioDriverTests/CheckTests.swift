import Foundation
import Testing
import VirtioCheck
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice

/// `virtioctl check` against the software device: clean when nothing is wrong, and each hostile
/// mode named by the clause it breaks.
@Suite(.leakChecked) struct CheckTests {
    func check(_ spec: String, timeoutMs: Int = 5_000, faults: SoftFaults = SoftFaults()) throws -> CheckReport {
        let f = try softBlock(spec, faults: faults)
        var o = CheckOptions()
        o.timeoutMilliseconds = timeoutMs
        let checker = DeviceChecker(transport: try PCITransport(function: f), options: o)
        checker.askForStatistics = { f.requestStatistics() }
        let report = checker.run()
        #expect(f.status == 0, "\(spec): the device is left reset")
        return report
    }

    @Test(arguments: ["", "packed=off", "in_order=off,indirect=off", "queue_size=100", "vfs=2,stats_vq=on,stats_interval=0",
                      "event_idx=off,notification_data=off,ring_reset=off", "queue_size=4,seg_max=2"])
    func aCleanDeviceChecksClean(spec: String) throws {
        let r = try check(spec)
        #expect(r.clean, "\(spec): \(r.findings)")
        #expect(r.count(.fail) == 0 && r.count(.pass) >= 8)
        let names = r.steps.map(\.name)
        if spec.isEmpty { #expect(names.contains("io split 256") && names.contains("io packed 255")) }
        #expect(names.contains("restore"))
        if spec.hasPrefix("vfs") {
            #expect(r.steps.first { $0.name == "admin" }?.outcome == .pass)
            #expect(r.steps.first { $0.name == "statistics queue" }?.outcome == .pass)
        }
        if spec == "queue_size=100" {
            // Packed only: a split ring needs a power of two, and the device offers 100.
            #expect(names.contains("io packed 99") && names.contains("io packed 5"), "\(names)")
        }
    }

    /// Every hostile mode is named by the clause (or failure) it stands for.
    @Test(arguments: [
        ("fault=used_id_range", "id < queue size"),
        ("fault=dup_id", "not yet got back"),
        ("fault=len_overflow", "device-writable part only"),
        ("fault=idx_jump", "Wrap Counters"),
        ("packed=off,fault=idx_jump", "used idx may only advance"),
        ("fault=flags_lie", "AVAIL and USED"),
        ("fault=never_complete", "none may stay with it"),
        ("fault=needs_reset", "DEVICE_NEEDS_RESET"),
        ("fault=status_ff", "surprise removal"),
        ("fault=config_churn", "config_generation"),
        ("fault=notify_storm", "SHOULD NOT send used buffer notifications"),
        ("stats_vq=on,stats_interval=0,fault=stats_unasked", "a used id must name a buffer"),
        ("vfs=2,admin_fault=status", "status and status_qualifier hold defined values"),
        ("admin=on,admin_fault=short", "whole command_specific_result"),
        ("vfs=2,admin_fault=hang", "completes each admin command"),
        // Completes every request OK and moves no data: only the read-back catches it.
        ("null=on", "moves the data"),
    ])
    func eachFaultIsNamed(spec: String, clause: String) throws {
        let r = try check(spec, timeoutMs: 300)
        #expect(!r.clean)
        #expect(r.findings.contains { $0.clause.contains(clause) }, "\(spec): \(r.findings.map(\.clause))")
    }

    /// A queue reset the device reports done (queue_reset 0) while queue_enable still reads 1.
    @Test func aHalfDoneQueueResetIsNamed() throws {
        var faults = SoftFaults()
        faults.queueEnableStuckAfterReset = true
        let r = try check("", faults: faults)
        let step = r.steps.first { $0.name == "ring reset" }
        #expect(step?.findings.first?.message == "queue 0: queue_reset reads 0 but queue_enable still reads 1", "\(String(describing: step))")
        #expect(step?.findings.first?.clause.contains("present 0 in queue_reset and queue_enable") == true)
    }

    @Test func eagainIsAllowedAndCounted() throws {
        let r = try check("vfs=2,admin_fault=eagain")
        #expect(r.clean, "\(r.findings)")
        #expect(r.steps.first { $0.name == "admin" }?.detail.contains("2 EAGAIN") == true)
    }

    @Test func theDiskIsPutBack() throws {
        let f = try softBlock("")
        let t = try PCITransport(function: f)
        // Known contents first, through a plain attach.
        do {
            let blk = try BlockDevice(transport: t)
            let b = try blk.allocateBuffer(bytes: 32 * 4096)
            fill(b, lba: 0, gen: 99)
            try blk.write(sector: 0, from: b)
        }
        let r = DeviceChecker(transport: t).run()
        #expect(r.clean)
        let blk = try BlockDevice(transport: t)
        let b = try blk.allocateBuffer(bytes: 32 * 4096)
        try blk.read(sector: 0, into: b)
        #expect(bytes(b) == patternBytes(lba: 0, gen: 99, length: 32 * 4096))
    }

    @Test func theCLIReportsJSONAndExitStatus() throws {
        let (s0, out, _) = try virtioctl(["check", "soft:blk", "-o", "json"])
        #expect(s0 == 0)
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        let summary = json?["summary"] as? [String: Any]
        #expect(summary?["clean"] as? Bool == true && (summary?["passed"] as? Int ?? 0) >= 10)
        let (s1, text, _) = try virtioctl(["check", "soft:blk,fault=len_overflow"])
        #expect(s1 == 1)
        #expect(text.contains("MUST: used length") && text.contains("clause:"))
        let (s2, _, err) = try virtioctl(["check", "soft:blk,fault=gremlins"])
        #expect(s2 == 2 && err.contains("gremlins"))
        let (s3, _, err3) = try virtioctl(["check", "soft:blk", "--read-only", "--write"])
        #expect(s3 != 0 && err3.contains("contradict"))
        // Read-only: nothing written, nothing to restore, still clean.
        let (s4, out4, _) = try virtioctl(["check", "soft:blk", "--read-only"])
        #expect(s4 == 0 && out4.contains("read and compare") && !out4.contains("restore"))
    }
}
