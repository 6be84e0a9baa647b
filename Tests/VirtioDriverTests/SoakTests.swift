import Foundation
import Testing
import VirtioCheck
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice

/// The data-integrity soak: random verified I/O over several queues, with one-shot faults at random
/// points; nothing read back corrupt, nothing lost. (The 1M-request run is `virtioctl soak`, in the note.)
@Suite(.leakChecked) struct SoakTests {
    func soak(_ spec: String, requests: Int, faultRate: Double, seed: UInt64 = 7,
              only: SoftInjectedFault? = nil) throws -> SoakReport {
        let f = try softBlock(spec)
        let blk = try BlockDevice(transport: try PCITransport(function: f))
        var o = SoakOptions()
        o.requests = requests
        o.blocks = 256
        o.depth = 8
        o.faultRate = faultRate
        o.seed = seed
        // Faults come every few milliseconds here: a held request must be noticed before the next one.
        o.timeoutMilliseconds = faultRate > 0 ? 5 : 2_000
        let soak = try IntegritySoak(blk, options: o)
        var i = 0
        soak.injectFault = { q in
            // Every kind in turn, so a short soak meets them all.
            let fault = only ?? SoftInjectedFault.allCases[i % SoftInjectedFault.allCases.count]
            guard f.inject(fault, queue: q) else { return nil }
            i += 1
            return fault.name
        }
        return try soak.run()
    }

    @Test(arguments: ["queues=4", "queues=4,packed=off", "queues=2,in_order=off", "queues=2,packed=off,in_order=off,indirect=off"])
    func faultsAtRandomPointsLoseAndCorruptNothing(spec: String) throws {
        let r = try soak(spec, requests: 6_000, faultRate: 1.0 / 300)
        #expect(r.completed == 6_000 && r.reads + r.writes == 6_000)
        #expect(r.corrupt == 0 && r.lost == 0 && r.failed == 0, "\(r)")
        #expect(r.recoveries >= 5 && r.retried >= r.recoveries, "\(r)")
        // Every kind of fault was injected (a hold only where it can be one: not under IN_ORDER),
        // and each ended in a recovery with its cause named.
        let kinds = SoftInjectedFault.allCases.count - (spec.contains("in_order=off") ? 0 : 1)
        #expect(r.injected.count == kinds, "\(r.injected)")
        #expect(r.stopped == nil)
        #expect(r.causes.keys.contains { $0.contains("DEVICE_NEEDS_RESET") }, "\(r.causes)")
        #expect(r.causes.keys.contains { $0.contains("id < queue size") }, "\(r.causes)")
        #expect(r.causes.keys.contains { $0.contains("device-writable part only") }, "\(r.causes)")
    }

    /// A request the device keeps is noticed by its age, and resubmitted after a reset. (Under
    /// IN_ORDER the next batch retires it legitimately, since the device did serve it.)
    @Test func aKeptRequestIsTimedOutAndResubmitted() throws {
        let r = try soak("queues=2,in_order=off", requests: 3_000, faultRate: 1.0 / 600, only: .hold)
        #expect(r.corrupt == 0 && r.lost == 0 && r.completed == 3_000)
        #expect(r.causes.keys.contains { $0.contains("none may stay with it") }, "\(r.causes) \(r.injected)")
    }

    @Test func withoutFaultsNothingIsRetried() throws {
        let r = try soak("queues=3", requests: 5_000, faultRate: 0)
        #expect(r.completed == 5_000 && r.corrupt == 0 && r.lost == 0 && r.recoveries == 0 && r.retried == 0 && r.failed == 0)
    }

    /// The checker is not fooled: a device that returns stale data is caught as corrupt.
    @Test func staleDataIsCaught() throws {
        // Reads that move nothing leave each buffer as the soak poisoned it.
        let f = try softBlock("null=on")
        let blk = try BlockDevice(transport: try PCITransport(function: f))
        var o = SoakOptions()
        o.requests = 200
        o.blocks = 64
        let r = try IntegritySoak(blk, options: o).run()
        #expect(r.corrupt == r.reads && r.reads > 50, "\(r)")
    }
}

extension SoakTests {
    /// A device that completes nothing: each request is given up after its attempts (bounded, counted).
    @Test func aDeviceThatNeverRecoversEndsTheSoak() throws {
        let f = try softBlock("fault=never_complete,fault_after=64")
        let blk = try BlockDevice(transport: try PCITransport(function: f))
        var o = SoakOptions()
        o.requests = 40
        o.blocks = 64
        o.depth = 4
        o.timeoutMilliseconds = 5
        let r = try IntegritySoak(blk, options: o).run()
        #expect(r.corrupt == 0 && r.completed == 0 && r.failed == 40 && r.lost == 0, "\(r)")
        #expect(r.retried == 40 * (IntegritySoak<SoftTransport>.maxAttempts - 1), "\(r)")
    }
}

extension SoakTests {
    @Test func theCLIReportsAndRefusesFaultsOnRealDevices() throws {
        let (rc, out, err) = try virtioctl(["soak", "soft:blk,queues=2", "--requests", "2000", "--blocks", "64", "--fault-rate", "0.01", "-o", "json"])
        #expect(rc == 0, "\(err)")
        struct R: Decodable { let completed, corrupt, lost, failed, recoveries: Int }
        let r = try JSONDecoder().decode(R.self, from: Data(out.utf8))
        #expect(r.completed == 2000 && r.corrupt == 0 && r.lost == 0 && r.failed == 0 && r.recoveries > 0)
        // Refused before anything is opened (the socket does not even exist).
        let (rc2, _, err2) = try virtioctl(["soak", "vfio-user:/nonexistent.sock", "--fault-rate", "0.1"])
        #expect(rc2 != 0 && err2.contains("--fault-rate needs a software device"), "\(err2)")
        let (rc3, _, err3) = try virtioctl(["soak", "soft:blk", "--interrupts", "msix"])
        #expect(rc3 != 0 && err3.contains("poll mode only"), "\(err3)")
    }
}
