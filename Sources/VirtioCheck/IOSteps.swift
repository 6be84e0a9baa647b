import VirtioCore
import VirtioDrivers
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// The virtio-blk steps: verified I/O over every ring layout, queue size and ring feature the
/// device offers, notifications, queue reset, device reset, and putting the disk back.
extension DeviceChecker {
    /// One verified I/O run per (ring, size, features) the device allows.
    func ioSteps() -> [() -> CheckStep] {
        guard buffers != nil, area.blocks > 0 else { return [] }
        let maxSize = maxQueueSize
        var runs: [(String, FeatureSet, Int?)] = []
        var rings: [(String, FeatureSet)] = [("split", [VirtioFeature.ringPacked])]
        if offered.contains(VirtioFeature.ringPacked) { rings.append(("packed", [])) }
        for (ring, off) in rings {
            runs.append(("\(ring) \(maxSize)", off, nil))
            if offered.contains(VirtioFeature.inOrder) {
                runs.append(("\(ring) \(maxSize) in-order off", off.union([VirtioFeature.inOrder]), nil))
            }
            if offered.contains(VirtioFeature.indirectDesc) {
                runs.append(("\(ring) \(maxSize) indirect off", off.union([VirtioFeature.indirectDesc]), nil))
            }
            // Smaller rings wrap more often; packed ones need not be powers of two, and a chain
            // of 3 in an odd-sized ring straddles the wrap point.
            let smaller = ring == "split" ? [maxSize / 2] : [maxSize - 1, 5]
            for n in smaller where n >= 4 && n < maxSize {
                runs.append(("\(ring) \(n)", off, n))
            }
        }
        return runs.map { run in { self.ioStep(name: "io \(run.0)", forcedOff: run.1, queueSize: run.2) } }
    }

    func ioStep(name: String, forcedOff: FeatureSet, queueSize: Int?) -> CheckStep {
        var step = CheckStep(name: name)
        let blk: BlockDevice<T>
        do { blk = try attach(forcedOff, queueSize: queueSize) } catch {
            step.findings.append(Classify.finding(error))
            return step
        }
        let q = blk.queuePointer(0)
        let n = q.pointee.virtqueue.size
        let packed = blk.negotiated.contains(VirtioFeature.ringPacked)
        let perRequest = blk.negotiated.contains(VirtioFeature.indirectDesc) ? 1 : 3
        // Enough to go round the ring twice and a half: split counts avail entries, packed descriptors.
        let requests = min(20_000, max(64, (2 * n + n / 2) / (packed ? perRequest : 1)))
        let r = exercise(blk, buffers!).run(requests: requests)
        if let f = r.finding { step.findings.append(f) }
        let used = r.requests * (packed ? perRequest : 1)
        step.detail = "\(r.requests) requests (\(options.writes ? "write, then read and compare" : "read and compare")) in \(r.batches) batches, up to \(r.maxInFlight) in flight, "
            + "\(perRequest) descriptor(s) each, ring of \(n) went round \(used / max(n, 1))x; "
            + "ring features: \(names(blk.negotiated.intersection(ringFeatures)))"
        return step
    }

    var ringFeatures: FeatureSet {
        [VirtioFeature.ringPacked, VirtioFeature.inOrder, VirtioFeature.indirectDesc, VirtioFeature.eventIdx,
         VirtioFeature.notificationData]
    }

    /// Used-buffer notifications over MSI-X: sent when asked for, withheld when suppressed;
    /// with and without EVENT_IDX when offered.
    func notificationSteps() -> [CheckStep] {
        guard buffers != nil, area.blocks > 0 else { return [] }
        guard transport.interruptVectors >= 2 else {
            return [CheckStep(name: "notifications", outcome: .skip, detail: "\(transport.interruptVectors) MSI-X vector(s): needs 2")]
        }
        var modes: [(String, FeatureSet)] = [("notifications", [])]
        if offered.contains(VirtioFeature.eventIdx) { modes.append(("notifications event-idx off", [VirtioFeature.eventIdx])) }
        return modes.map { notificationStep(name: $0.0, forcedOff: $0.1) }
    }

    func notificationStep(name: String, forcedOff: FeatureSet) -> CheckStep {
        var step = CheckStep(name: name)
        let blk: BlockDevice<T>
        do { blk = try attach(forcedOff, interrupts: true) } catch {
            step.findings.append(Classify.finding(error))
            return step
        }
        let q = blk.queuePointer(0)
        let fd = q.pointee.interruptFD
        guard fd >= 0 else { return CheckStep(name: name, outcome: .skip, detail: "no MSI-X vector was granted to queue 0") }
        let ex = exercise(blk, buffers!, writes: false)
        let wait = Int32(min(options.timeoutMilliseconds, 1000))
        var r = ExerciseResult()
        let eventIdx = blk.negotiated.contains(VirtioFeature.eventIdx)
        // Asked for: one request at a time, notifications enabled before each.
        for i in 0..<8 {
            _ = q.pointee.virtqueue.enableUsedNotifications()
            _ = drain(fd)
            if let f = ex.batch(.read, [i % area.blocks], inOrder: false, &r) { step.findings.append(f); return step }
            if !readable(fd, milliseconds: wait) {
                step.findings.append(CheckFinding(.must, clause: Clause.notifyWhenAsked,
                    "request \(i + 1) completed with notifications enabled\(eventIdx ? " (used_event at it)" : " (flags 0)") and no notification came within \(wait) ms"))
                return step
            }
        }
        // Suppressed: batches of reads polled back, then count what arrived anyway.
        q.pointee.virtqueue.disableUsedNotifications()
        _ = drain(fd)
        let before = r.requests
        let quiet = ex.run(requests: 32)
        if let f = quiet.finding { step.findings.append(f); return step }
        usleep(20_000)
        let stray = drain(fd)
        if stray > 0 {
            step.findings.append(CheckFinding(.should, clause: Clause.quietWhenSuppressed,
                "\(stray) notification(s) arrived during \(quiet.requests) requests with notifications disabled"))
        }
        step.detail = "\(before) requests each notified when asked; \(quiet.requests) with notifications disabled brought \(stray); "
            + (eventIdx ? "EVENT_IDX (used_event)" : "flags (NO_INTERRUPT / DISABLE)")
        return step
    }

    /// VIRTIO_F_RING_RESET: reset queue 0 with requests in flight, set it up again, verified I/O on it.
    func ringResetStep() -> CheckStep {
        guard offered.contains(VirtioFeature.ringReset) else {
            return CheckStep(name: "ring reset", outcome: .skip, detail: "VIRTIO_F_RING_RESET not offered")
        }
        guard let buffers, area.blocks > 0 else { return CheckStep(name: "ring reset", outcome: .skip, detail: "no I/O area") }
        var step = CheckStep(name: "ring reset")
        do throws(BlockError) {
            let blk = try attach([])
            let dropped = try submitWithoutPolling(blk, buffers)
            try blk.resetQueue(0)
            let r = exercise(blk, buffers).run(requests: 2 * blk.queuePointer(0).pointee.virtqueue.size + 8)
            if let f = r.finding { step.findings.append(f) }
            step.detail = "queue 0 reset with \(dropped) request(s) in flight, set up again; \(r.requests) verified requests after"
        } catch { step.findings.append(Classify.finding(error)) }
        return step
    }

    /// Device reset with requests in flight: status must read 0, and a fresh attach must work.
    func deviceResetStep() -> CheckStep {
        guard let buffers, area.blocks > 0 else { return CheckStep(name: "device reset", outcome: .skip, detail: "no I/O area") }
        var step = CheckStep(name: "device reset")
        do throws(BlockError) {
            var inFlight = 0
            do {
                let blk = try attach([])
                inFlight = try submitWithoutPolling(blk, buffers)
                do { try blk.device.reset() } catch { throw BlockError.virtio(error) }
            }
            let again = try attach([])
            let r = exercise(again, buffers).run(requests: 64)
            if let f = r.finding { step.findings.append(f) }
            step.detail = "reset with \(inFlight) request(s) in flight read 0; after a fresh initialisation \(r.requests) verified requests"
        } catch { step.findings.append(Classify.finding(error)) }
        return step
    }

    /// Reads into every buffer slot and kicks without polling: requests the device holds at a reset.
    private func submitWithoutPolling(_ blk: BlockDevice<T>, _ buffers: DMARegion) throws(BlockError) -> Int {
        let q = blk.queuePointer(0)
        let n = min(8, area.blocks, q.pointee.singleSegmentRequestsFree)
        for i in 0..<n {
            let d = buffers.slice(offset: i * TestArea.blockBytes, length: TestArea.blockBytes)
            try q.pointee.submit(.read, sector: area.sector(i), data: BufferElement(address: d.deviceAddress, length: UInt32(d.length)), tag: UInt64(i))
        }
        q.pointee.kick()
        return n
    }

    /// Writes back what the disk held before the suite, and reads it to be sure.
    func restoreStep() -> CheckStep {
        guard area.written, let buffers else { return CheckStep(name: "restore", outcome: .skip, detail: "nothing was written") }
        var step = CheckStep(name: "restore")
        let known = (0..<area.blocks).filter { area.original[$0] != nil }
        for b in known { area.expected[b] = area.original[b] }
        do throws(BlockError) {
            let blk = try attach([])
            let ex = exercise(blk, buffers)
            var r = ExerciseResult()
            let fit = ex.fit
            for chunk in stride(from: 0, to: known.count, by: fit) {
                let blocks = Array(known[chunk..<min(chunk + fit, known.count)])
                for (i, b) in blocks.enumerated() {
                    area.original[b]!.withUnsafeBytes { ex.buffer(i).pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                }
                if let f = ex.batch(.write, blocks, inOrder: false, &r) { step.findings.append(f); return step }
            }
            let back = BlockExercise(blk: blk, area: area, buffers: buffers, timeoutMilliseconds: options.timeoutMilliseconds, writes: false)
                .run(requests: area.blocks)
            if let f = back.finding { step.findings.append(f) }
        } catch { step.findings.append(Classify.finding(error)) }
        let lost = area.blocks - known.count
        step.detail = "\(known.count) block(s) of 4 KiB written back as they were and read to compare"
            + (lost > 0 ? "; \(lost) block(s) were never read intact and are left with test data" : "")
        return step
    }
}

/// Reads and clears an eventfd's count without blocking.
func drain(_ fd: Int32) -> UInt64 {
    // One read takes the whole count (a storm cannot keep this busy).
    guard readable(fd, milliseconds: 0) else { return 0 }
    var v: UInt64 = 0
    return read(fd, &v, 8) == 8 ? v : 0
}

func readable(_ fd: Int32, milliseconds: Int32) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&p, 1, milliseconds) == 1
}
