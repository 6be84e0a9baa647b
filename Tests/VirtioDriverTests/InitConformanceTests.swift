import Testing
#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice

/// Digest d.5: the initialisation and PCI rules, observed from inside the software device.
@Suite(.leakChecked) struct InitConformanceTests {
    @Test func statusSequenceAndQueueOrder() throws {
        var faults = SoftFaults()
        faults.resetDelayReads = 3
        let (f, blk) = try attach("queues=2", faults: faults, options: { var o = BlockAttachOptions(); o.queues = 2; return o }())
        let events = f.log.events
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        // d.5.1: status writes are exactly reset, ACK, ACK|DRIVER, +FEATURES_OK, +DRIVER_OK.
        let statuses = events.compactMap { if case let .status(v) = $0 { v } else { nil } }
        #expect(statuses == [0, 1, 3, 0xB, 0xF])
        // d.5.2: after the reset write the driver read status until it was 0 (3 reads saw the old value).
        #expect(events.filter { if case .statusReadDuringReset = $0 { true } else { false } }.count == 3)
        // Features are written (both windows) between DRIVER and FEATURES_OK.
        let iDriver = events.firstIndex(of: .status(3))!, iFOK = events.firstIndex(of: .status(0xB))!
        let featureWrites = events.indices.filter { if case .driverFeatures = events[$0] { true } else { false } }
        #expect(featureWrites.count == 2 && featureWrites.allSatisfy { $0 > iDriver && $0 < iFOK })
        // d.5.3: each queue_enable is 1 and follows that queue's size/desc/driver/device writes; all before DRIVER_OK.
        let iDOK = events.firstIndex(of: .status(0xF))!
        for q in 0..<2 {
            let enable = events.firstIndex(of: .queueEnable(queue: q, value: 1))!
            #expect(enable > iFOK && enable < iDOK)
            for field in ["size", "desc", "driver", "device"] {
                let last = events.lastIndex(of: .queueField(queue: q, field: field))!
                #expect(last < enable, "queue \(q) \(field) written after enable")
            }
        }
        // Bus mastering was turned on before DRIVER_OK.
        let busMaster = events.firstIndex { if case let .commandRegister(c) = $0 { c & 4 != 0 } else { false } }!
        #expect(busMaster < iDOK)
        // Accepted features are a subset of those offered and include VERSION_1.
        #expect(blk.negotiated.isSubset(of: f.offeredFeatures))
        #expect(f.negotiatedFeatures == blk.negotiated)
        #expect(blk.negotiated.contains(VirtioFeature.version1))
    }

    @Test func resetWaitTimesOut() throws {
        var faults = SoftFaults()
        faults.resetDelayReads = 1_000_000
        let f = try softBlock(faults: faults)
        let device = VirtioDevice(transport: try PCITransport(function: f))
        device.resetTimeoutMilliseconds = 2
        #expect(throws: VirtioError.resetTimeout(status: 1)) {
            try device.initialize(policy: FeaturePolicy(), deviceTypeBits: blockDriverFeatures)
        }
    }

    @Test func rejectedFeaturesSetFailed() throws {
        var faults = SoftFaults()
        faults.rejectFeatures = [VirtioFeature.ringPacked]
        let f = try softBlock(faults: faults)
        let error = #expect(throws: BlockError.self) { try BlockDevice(transport: try PCITransport(function: f)) }
        guard case let .virtio(.featuresRejected(names))? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(names.contains("VIRTIO_F_RING_PACKED"))
        #expect(f.status & DeviceStatus.failed.rawValue != 0, "FAILED not set after FEATURES_OK was refused")
        #expect(f.status & DeviceStatus.driverOK.rawValue == 0)
        // Forcing the feature off makes the same device acceptable.
        var o = BlockAttachOptions()
        o.policy.forcedOff = [VirtioFeature.ringPacked]
        let blk = try BlockDevice(transport: try PCITransport(function: f), options: o)
        #expect(!blk.negotiated.contains(VirtioFeature.ringPacked))
    }

    @Test func legacyOnlyDeviceIsRefused() throws {
        var faults = SoftFaults()
        faults.omitVersion1 = true
        let f = try softBlock(faults: faults)
        #expect(throws: BlockError.virtio(.legacyDevice)) { try BlockDevice(transport: try PCITransport(function: f)) }
        #expect(f.status & DeviceStatus.failed.rawValue != 0)
    }

    @Test func requiredFeatureMissingAndUnknownRequired() throws {
        var o = BlockAttachOptions()
        o.policy.required = [VirtioFeature.ringPacked]
        #expect(throws: BlockError.virtio(.requiredFeatureNotOffered(["VIRTIO_F_RING_PACKED"]))) {
            _ = try attach("packed=off", options: o)
        }
        o.policy.required = [VirtioFeature.srIOV]
        #expect(throws: BlockError.virtio(.requiredFeatureUnsupported(["VIRTIO_F_SR_IOV"]))) { _ = try attach("", options: o) }
    }

    @Test(arguments: [false, true])
    func notifyWidthAndValue(withData: Bool) throws {
        let (f, blk) = try attach("notification_data=\(withData ? "on" : "off"),event_idx=off")
        let w = try blk.allocateBuffer(bytes: 512)
        for i in 0..<5 { try blk.write(sector: UInt64(i), from: w) }
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")  // d.5.8: the device checks each doorbell's width
        let (count, last) = f.notifications(queue: 0)
        #expect(count == 5)
        if withData {
            // Packed, 1 descriptor per request (indirect): next_off 5, wrap 1.
            #expect(last == (1 << 31) | (5 << 16) | 0)
        } else {
            #expect(last == 0)
        }
    }

    @Test func notifConfigDataCookie() throws {
        let (f, blk) = try attach("notif_config_data=on,notification_data=off")
        #expect(blk.negotiated.contains(VirtioFeature.notifConfigData))
        let w = try blk.allocateBuffer(bytes: 512)
        try blk.write(sector: 0, from: w)
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        #expect(f.notifications(queue: 0).last == 0x4000)
    }

    @Test func msixVectorReadBackAndFallback() throws {
        for refuse in [false, true] {
            var faults = SoftFaults()
            faults.refuseVectors = refuse
            let f = try softBlock(faults: faults)
            let t = try PCITransport(function: f)
            let fds = try f.enableMSIX(vectors: 2)
            let device = VirtioDevice(transport: t)
            try device.initialize(policy: FeaturePolicy(), deviceTypeBits: blockDriverFeatures)
            var q = try device.makeQueue(0, size: 8, vector: 1)
            try device.driverOK()
            #expect(q.vector == (refuse ? nil : 1))
            #expect(device.queues[0].vector == (refuse ? nil : 1))
            if !refuse { _ = q.enableUsedNotifications() }
            // One request, hand-built: header, status.
            let mem = try t.dma.allocate(length: 64, alignment: 64)
            mem.pointer.storeBytes(of: UInt32(8), as: UInt32.self)  // GET_ID with a 20-byte buffer
            let id = try t.dma.allocate(length: 20, alignment: 8)
            let readable = [BufferElement(address: mem.deviceAddress, length: 16)]
            let writable = [BufferElement(address: id.deviceAddress, length: 20),
                            BufferElement(address: mem.deviceAddress + 16, length: 1)]
            _ = try q.add(readable: readable.span, writable: writable.span)
            q.kick()
            #expect(try q.pollUsed() != nil)
            #expect(f.interrupts(queue: 0) == (refuse ? 0 : 1))
            if !refuse {
                var value: UInt64 = 0
                #expect(read(fds[1], &value, 8) == 8 && value == 1, "vector 1's eventfd was not signalled")
            }
            #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        }
    }

    @Test func configReadsRetryOnGenerationChange() throws {
        var faults = SoftFaults()
        faults.configChurnReads = 5
        let (_, blk) = try attach("size=8M", faults: faults)
        #expect(blk.config.capacitySectors == 16384)  // garbage from the churned reads was discarded
        faults.configChurnReads = 10_000
        #expect(throws: BlockError.virtio(.configUnstable(attempts: 64))) { _ = try attach("size=8M", faults: faults) }
    }

    @Test func deviceNeedsResetIsReported() throws {
        var faults = SoftFaults()
        faults.needsResetAfterRequests = 3
        var o = BlockAttachOptions()
        o.timeoutMilliseconds = 2000
        let (f, blk) = try attach("", faults: faults, options: o)
        let w = try blk.allocateBuffer(bytes: 512)
        var failure: BlockError?
        for i in 0..<10 {
            do { try blk.write(sector: UInt64(i), from: w) } catch { failure = error; break }
        }
        #expect(failure == .virtio(.deviceNeedsReset))
        #expect(f.status == 0, "the driver resets a device that set DEVICE_NEEDS_RESET before it reports the error")
        #expect(f.failure.withLock { $0 } == nil, "the reset cleared the device's failure")
    }

    @Test func capabilityChecks() throws {
        var short = SoftFaults()
        short.commonLength = 0x30
        #expect(throws: VirtioError.transport(TransportError("soft:blk", .layout(TransportCause(CapabilityError.commonTooShort(0x30)))))) {
            _ = try PCITransport(function: try softBlock(faults: short))
        }
        var outside = SoftFaults()
        outside.commonOutsideBAR = true
        let e1 = #expect(throws: VirtioError.self) { _ = try PCITransport(function: try softBlock(faults: outside)) }
        #expect("\(e1!)".contains("no usable common configuration capability") && "\(e1!)".contains("exceeds BAR 4"))
        var odd = SoftFaults()
        odd.oddNotifyMultiplier = true
        let e2 = #expect(throws: VirtioError.self) { _ = try PCITransport(function: try softBlock(faults: odd)) }
        #expect("\(e2!)".contains("notify_off_multiplier 6"))
        // A looping capability list is cut at the repeat; the capabilities before it still work.
        var loop = SoftFaults()
        loop.capabilityLoop = true
        let t = try PCITransport(function: try softBlock(faults: loop))
        #expect(t.layout.ignored.contains { $0.contains("capability list broken") })
        #expect(t.layout.msixVectors == 8)
        // Without admin-queue registers (common config 0x38 bytes), ADMIN_VQ is never accepted.
        var noAdmin = SoftFaults()
        noAdmin.commonLength = 0x38
        let short38 = try PCITransport(function: try softBlock("ring_reset=on,notif_config_data=on", faults: noAdmin))
        #expect(!short38.adminQueueRegistersAvailable)
        #expect(short38.unsupportedFeatures == [VirtioFeature.notifConfigData, VirtioFeature.ringReset, VirtioFeature.adminVQ])
        let blk = try BlockDevice(transport: short38)
        #expect(!blk.negotiated.contains(VirtioFeature.ringReset) && !blk.negotiated.contains(VirtioFeature.notifConfigData))
    }

    @Test func perQueueReset() throws {
        let (f, blk) = try attach("ring_reset=on")
        let w = try blk.allocateBuffer(bytes: 4096), r = try blk.allocateBuffer(bytes: 4096)
        fill(w, lba: 1, gen: 1)
        try blk.write(sector: 8, from: w)
        // Leave a request in flight, then reset the queue: it is dropped, and the queue works again.
        try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws(BlockError) in
            try q.submit(.read, sector: 8, data: BufferElement(address: r.deviceAddress, length: 4096), tag: 99)
        }
        #expect(try blk.resetQueue(0) == 1)
        #expect(f.log.events.contains(.queueReset(queue: 0)))
        try blk.read(sector: 8, into: r)
        #expect(bytes(r) == bytes(w))
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        // Without RING_RESET negotiated the driver refuses to try.
        let (_, plain) = try attach("ring_reset=off")
        #expect(throws: BlockError.virtio(.featureNotNegotiated("VIRTIO_F_RING_RESET"))) { try plain.resetQueue(0) }
    }
}
