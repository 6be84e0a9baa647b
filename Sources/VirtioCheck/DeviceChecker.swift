import Logging
import VirtioCore
import VirtioDrivers
import VirtioRing

/// What `virtioctl check` may do to the device.
public struct CheckOptions: Sendable {
    /// How long one batch of requests (or one admin command) may take.
    public var timeoutMilliseconds = 5_000
    /// Write test patterns (the original contents are read first and put back at the end). Off: reads only.
    public var writes = true
    /// The addresses the virtio-net frame steps use.
    public var net = NetCheckAddresses()
    public init() {}
}

/// Drives a device through the scripted suite and collects every device-side violation, each
/// with the clause it breaks. Every step attaches afresh and leaves the device reset; a device
/// that is gone ends the suite.
public final class DeviceChecker<T: VirtioTransport> {
    let transport: T
    let options: CheckOptions
    let logger: Logger
    /// Makes the device ask for statistics now (a software device's own clock); nil: wait for it.
    public var askForStatistics: (() -> Bool)?
    /// Called after each step with the steps so far (progress for a slow device).
    public var stepDone: ((CheckStep, Int) -> Void)?
    var report: CheckReport
    var offered: FeatureSet = []
    var area = TestArea(blocks: 0)
    var buffers: DMARegion?
    /// Queue 0's queue_size before any step lowered it.
    var maxQueueSize = 0

    public init(transport: T, options: CheckOptions = CheckOptions(), logger: Logger = Logger(label: "virtio.check")) {
        self.transport = transport
        self.options = options
        self.logger = logger
        let type = transport.deviceType.map { "\($0)" } ?? "device id \(transport.deviceID)"
        report = CheckReport(device: transport.name, deviceType: type)
    }

    /// Runs every step the device's features allow and returns the report.
    public func run() -> CheckReport {
        // A step whose attach failed left FAILED set; whatever happened, the device ends reset.
        defer { try? VirtioDevice(transport: transport, logger: logger).reset() }
        runSteps()
        // Whatever ended the suite, the disk gets its blocks back if the device still answers.
        if area.written {
            var restore = restoreStep()
            if !restore.findings.isEmpty { restore.outcome = .fail }
            report.steps.append(restore)
            if !restore.findings.isEmpty, report.aborted != nil {
                report.aborted! += "; blocks 0..<\(area.blocks) of 4 KiB may still hold test data"
            }
        }
        return report
    }

    private func runSteps() {
        let steps: [(String, () -> CheckStep)] = [
            ("reset", resetStep), ("features", featureStep), ("config", configStep),
        ]
        for (_, step) in steps where !record(step()) { return }
        if transport.deviceType == .net {
            for step in netSteps() where !record(step()) { return }
            _ = record(adminStep())
            return
        }
        guard transport.deviceType == .block else {
            report.steps.append(CheckStep(name: "io", outcome: .skip, detail: "the I/O steps drive virtio-blk; this is a \(report.deviceType)"))
            _ = record(adminStep())
            return
        }
        for step in ioSteps() where !record(step()) { return }
        for step in [notificationSteps, { [self.ringResetStep()] }, { [self.deviceResetStep()] },
                     { [self.adminStep()] }, { [self.statsStep()] }] {
            for s in step() where !record(s) { return }
        }
    }

    /// Adds a step; false when the device is gone and the rest cannot run.
    private func record(_ step: CheckStep) -> Bool {
        var step = step
        if !step.findings.isEmpty { step.outcome = .fail }
        report.steps.append(step)
        stepDone?(step, report.steps.count)
        if step.findings.contains(where: { $0.clause == Clause.removed || $0.clause == Clause.reset }) {
            report.aborted = "after step \(step.name): the device no longer resets or answers; the remaining steps did not run"
            return false
        }
        return true
    }

    // MARK: generic steps

    func resetStep() -> CheckStep {
        let device = VirtioDevice(transport: transport, logger: logger)
        do { try device.reset() } catch {
            return CheckStep(name: "reset", findings: [Classify.finding(error)])
        }
        return CheckStep(name: "reset", detail: "device_status read 0 after writing 0")
    }

    func featureStep() -> CheckStep {
        var step = CheckStep(name: "features")
        do { offered = try transport.readDeviceFeatures() } catch {
            step.findings.append(Classify.finding(error))
            return step
        }
        let device = VirtioDevice(transport: transport, logger: logger)
        report.offered = device.names(offered)
        if !offered.contains(VirtioFeature.version1) {
            step.findings.append(Classify.finding(VirtioError.legacyDevice))
        }
        // Two subsets: the full one the driver takes, then the bare minimum (VERSION_1, and
        // ACCESS_PLATFORM, which a device behind an IOMMU may insist on).
        let minimum: FeatureSet = [VirtioFeature.version1, VirtioFeature.accessPlatform]
        for (label, policy) in [("all understood", FeaturePolicy()),
                                ("VERSION_1 only", FeaturePolicy(forcedOff: offered.subtracting(minimum)))] {
            do {
                let net = transport.deviceType == .net
                try device.initialize(policy: policy, deviceTypeBits: transport.deviceType == .block ? blockDriverFeatures : net ? netDriverFeatures : []) {
                    net ? netFeatureDependencies($0, mtu: nil) : $0
                }
                try device.reset()
            } catch {
                var f = Classify.finding(error)
                if case .featuresRejected = error { f = CheckFinding(f.severity, clause: f.clause, "\(label): \(f.message)") }
                step.findings.append(f)
            }
        }
        step.detail = "\(report.offered.count) features offered; FEATURES_OK kept for the full subset and for the minimal one"
        return step
    }

    func configStep() -> CheckStep {
        var step = CheckStep(name: "config")
        guard transport.deviceType == .block else {
            let device = VirtioDevice(transport: transport, logger: logger)
            do {
                try device.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
                _ = try device.readConfig { _ throws(VirtioError) in 0 }
                try device.reset()
                step.detail = "config_generation settled"
            } catch { step.findings.append(Classify.finding(error)) }
            return step
        }
        let blk: BlockDevice<T>
        do { blk = try attach([]) } catch {
            step.findings.append(Classify.finding(error))
            return step
        }
        let c = blk.config
        // 32 blocks of 4 KiB at the start of the disk (fewer on a tiny one), saved for restoring.
        let blocks = Int(min(32, c.capacityBytes / UInt64(TestArea.blockBytes)))
        area = TestArea(blocks: blocks)
        if buffers == nil, blocks > 0 {
            buffers = try? transport.dma.allocate(length: 64 * TestArea.blockBytes, alignment: 4096)
        }
        maxQueueSize = (try? transport.queueMaxSize(0)) ?? 0
        step.detail = "capacity \(c.capacitySectors) sectors, blk_size \(c.blockSize), seg_max \(c.segMax.map(String.init) ?? "-"), \(c.numQueues) queue(s) of up to \(maxQueueSize); config_generation settled"
        if let b = buffers, blocks > 0 {
            // Saving is itself a read pass: what the device returns now is what it must keep returning.
            let r = exercise(blk, b, writes: false).run(requests: blocks)
            if let f = r.finding { step.findings.append(f) }
        } else if blocks == 0 {
            step.detail += "; capacity under 4 KiB, no I/O steps"
        }
        return step
    }

    // MARK: helpers

    /// Attaches the block driver with `forcedOff` bits refused.
    func attach(_ forcedOff: FeatureSet, queueSize: Int? = nil, interrupts: Bool = false, stats: Bool = false) throws(BlockError) -> BlockDevice<T> {
        var o = BlockAttachOptions()
        o.policy = FeaturePolicy(forcedOff: forcedOff)
        o.queues = 1
        o.queueSize = queueSize
        o.interrupts = interrupts
        o.draftStatsQueue = stats
        o.timeoutMilliseconds = options.timeoutMilliseconds
        return try BlockDevice(transport: transport, options: o, logger: logger)
    }

    func exercise(_ blk: BlockDevice<T>, _ buffers: DMARegion, writes: Bool? = nil) -> BlockExercise<T> {
        BlockExercise(blk: blk, area: area, buffers: buffers, timeoutMilliseconds: options.timeoutMilliseconds,
                      writes: (writes ?? options.writes) && !blk.negotiated.contains(BlockFeature.readOnly))
    }

    func names(_ set: FeatureSet) -> String {
        let n = FeatureNames.names(set, deviceType: transport.deviceType)
        return n.isEmpty ? "none" : n.joined(separator: " ")
    }
}
