import Synchronization
import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioWire

/// What an owner does to a member function through admin commands: stop and resume it,
/// read and write its device parts, and reach its registers through the legacy interface.
extension SoftPCIFunction {
    public var isStopped: Bool { stopped.load(ordering: .acquiring) }

    /// DEV_MODE_SET STOPPED: once this returns, no drain is running and none will start
    /// (every buffer the device took has its used entry written; the rest stay in the ring).
    func stopDevice() {
        stopped.store(true, ordering: .releasing)
        for q in queues { q.quiesce() }
    }

    /// DEV_MODE_SET 0: serve again, starting with whatever the driver made available meanwhile
    /// (its notifications were accepted but not acted on while stopped).
    func resumeDevice() {
        guard stopped.exchange(false, ordering: .acquiringAndReleasing) else { return }
        guard live.load(ordering: .acquiring) else { return }
        let negotiated = negotiatedFeatures
        let running = registers.withLock { r in (0..<personality.queueCount).filter { r.queues[$0].enabled } }
        for q in running { serve(queue: q, negotiated: negotiated) }
    }

    /// The member's device parts (`device-parts.tex`), with each running queue's ring position.
    func memberState() -> MemberState {
        registers.withLock { r in
            var qs: [MemberState.Queue] = []
            for i in 0..<personality.queueCount {
                let q = r.queues[i]
                let position = q.enabled ? queues[i].position : nil
                qs.append(MemberState.Queue(
                    index: i,
                    config: VQConfigPart(size: q.size, vector: q.vector, enabled: q.enabled, descriptors: q.descriptors,
                                         driver: q.driver, device: q.device),
                    notify: VQNotifyPart(notifyOff: UInt16(i), notifConfigData: Self.notifConfigData(i)),
                    state: position.map { VQStatePart(availState: $0.availState, usedState: $0.usedState) }))
            }
            let status = r.status | (needsReset.load(ordering: .acquiring) ? DeviceStatus.deviceNeedsReset.rawValue : 0)
            return MemberState(deviceFeatures: offered.rawValue, driverFeatures: r.driverFeatures,
                               configMSIXVector: r.configVector, status: status, queues: qs)
        }
    }

    /// DEV_PARTS_SET: validates everything first (a failed SET has no side effects), then becomes
    /// the state the parts describe. The function must be stopped; it runs from there on resume.
    /// Returns why the parts were refused, or nil.
    func applyMemberState(_ s: MemberState) -> String? {
        guard isStopped else { return "the member is not stopped (DEV_MODE_SET STOPPED first)" }
        // admin-cmds-device-parts.tex: DEV_FEATURES is verified, never applied.
        if s.deviceFeatures != 0, s.deviceFeatures != offered.rawValue {
            return "DEV_FEATURES 0x\(String(s.deviceFeatures, radix: 16)) differ from this member's 0x\(String(offered.rawValue, radix: 16))"
        }
        let accepted = FeatureSet(rawValue: s.driverFeatures)
        guard accepted.subtracting(offered).isEmpty else { return "DRV_FEATURES accept bits this member does not offer" }
        let packed = accepted.contains(VirtioFeature.ringPacked)
        for q in s.queues {
            guard q.index < personality.queueCount else { return "VQ_CFG names queue \(q.index); the member has \(personality.queueCount)" }
            guard q.config.enabled else { continue }
            let n = Int(q.config.size)
            guard n >= 1, n <= personality.maxQueueSize, packed || n & (n - 1) == 0 else {
                return "VQ_CFG queue \(q.index): size \(n) is not valid here"
            }
        }
        let ringFeatures = RingFeatures(indirect: accepted.contains(VirtioFeature.indirectDesc),
                                        eventIndex: accepted.contains(VirtioFeature.eventIdx),
                                        inOrder: accepted.contains(VirtioFeature.inOrder))
        for q in queues { q.stop() }
        var starts: [(Int, QueueStart)] = []
        registers.withLock { r in
            r.status = s.status & ~DeviceStatus.deviceNeedsReset.rawValue
            r.driverFeatures = s.driverFeatures
            r.configVector = Int(s.configMSIXVector) < msixVectors ? s.configMSIXVector : VirtioPCIWire.noVector
            for q in s.queues {
                var regs = QueueRegisters(size: q.config.size)
                regs.vector = Int(q.config.vector) < msixVectors ? q.config.vector : VirtioPCIWire.noVector
                regs.enabled = q.config.enabled
                regs.descriptors = q.config.descriptors
                regs.driver = q.config.driver
                regs.device = q.config.device
                regs.written = ["size", "desc", "driver", "device"]
                r.queues[q.index] = regs
                guard q.config.enabled else { continue }
                let position = q.state.map { RingPosition(packed: packed, availState: $0.availState, usedState: $0.usedState) }
                let fd = regs.vector == VirtioPCIWire.noVector ? nil : interruptFD(vector: regs.vector)
                starts.append((q.index, QueueStart(
                    size: Int(q.config.size),
                    addresses: QueueAddresses(descriptors: q.config.descriptors, driver: q.config.driver, device: q.config.device),
                    packed: packed, features: ringFeatures, interruptFD: fd, resume: position)))
            }
        }
        negotiatedBits.store(s.driverFeatures, ordering: .releasing)
        needsReset.store(false, ordering: .releasing)
        failure.withLock { $0 = nil }
        let ok = DeviceStatus(rawValue: s.status)
        live.store(ok.contains(.driverOK) && !ok.contains(.failed), ordering: .releasing)
        for (i, start) in starts {
            if let why = queues[i].start(start, memory: arena) { return "queue \(i): \(why)" }
        }
        log.record(.partsRestored(queues: starts.map(\.0)))
        return nil
    }

    /// Legacy common configuration (the virtio 0.9 I/O header, MSI-X layout) mapped onto this
    /// function's registers. Fields: host features 0 (4), guest features 4 (4), queue PFN 8 (4),
    /// queue size 12 (2), queue select 14 (2), queue notify 16 (2), status 18 (1), ISR 19 (1),
    /// config vector 20 (2), queue vector 22 (2). Returns nil when (offset, width) is not one field.
    static func legacyField(_ offset: Int, _ width: Int) -> Bool {
        switch (offset, width) {
        case (0, 4), (4, 4), (8, 4), (12, 2), (14, 2), (16, 2), (18, 1), (19, 1), (20, 2), (22, 2): true
        default: false
        }
    }

    func legacyCommonRead(offset: Int, width: Int) -> [UInt8]? {
        guard Self.legacyField(offset, width) else { return nil }
        let v: UInt32 = registers.withLock { r -> UInt32 in
            let q = Int(r.queueSelect)
            let valid = q < personality.queueCount
            switch offset {
            case 0: return offered.word(0)
            case 4: return UInt32(truncatingIfNeeded: r.driverFeatures)
            case 8: return valid ? UInt32(truncatingIfNeeded: r.queues[q].descriptors >> 12) : 0
            case 12: return valid ? UInt32(r.queues[q].size) : 0
            case 14: return UInt32(r.queueSelect)
            case 18: return UInt32(r.status | (needsReset.load(ordering: .acquiring) ? DeviceStatus.deviceNeedsReset.rawValue : 0))
            case 19: return UInt32(isr.exchange(0, ordering: .acquiringAndReleasing))
            case 20: return UInt32(r.configVector)
            case 22: return valid ? UInt32(r.queues[q].vector) : UInt32(VirtioPCIWire.noVector)
            default: return 0  // queue notify reads as 0
            }
        }
        return (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) }
    }

    /// Returns nil on success, else why the write was refused.
    func legacyCommonWrite(offset: Int, data: [UInt8]) -> String? {
        guard Self.legacyField(offset, data.count) else {
            return "legacy common config: \(data.count) byte(s) at \(offset) is not one field"
        }
        var v: UInt64 = 0
        for (i, b) in data.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        switch offset {
        case 4:
            registers.withLock { $0.driverFeatures = $0.driverFeatures & ~0xFFFF_FFFF | v }
        case 14:
            registers.withLock { $0.queueSelect = UInt16(truncatingIfNeeded: v) }
        case 16:
            let q = Int(v)
            guard q < personality.queueCount else { return "legacy queue notify of queue \(q): no such queue" }
            if live.load(ordering: .acquiring) { serve(queue: q, negotiated: negotiatedFeatures) }
        case 18:
            writeStatus(UInt8(truncatingIfNeeded: v))
        case 20:
            writeCommon(0x10, 2, v)
        case 22:
            writeCommon(0x1A, 2, v)
        case 8:
            return "legacy queue PFN: this member's rings are set up through the modern interface only"
        default:
            return "legacy common config field at \(offset) is read-only"
        }
        return nil
    }

    /// Legacy device config: the device-specific bytes (read-only for blk without CONFIG_WCE).
    func legacyDeviceRead(offset: Int, width: Int) -> [UInt8]? {
        let config = deviceConfigSnapshot
        guard width > 0, offset >= 0, offset + width <= config.count else { return nil }
        return Array(config[offset..<offset + width])
    }
}
