import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioWire

/// The common configuration structure's register semantics, and the doorbells.
extension SoftPCIFunction {
    static var widthRule: String {
        "transport-pci.tex Common configuration structure layout: 8-bit fields with 8-bit accesses, 16-bit fields with aligned 16-bit accesses, 32- and 64-bit fields with aligned 32-bit accesses"
    }

    func readCommon(_ offset: Int, _ width: Int) -> UInt32 {
        guard let field = CommonConfigField(offset: offset, width: width) else {
            violation(Self.widthRule, "common config read of \(width) bytes at 0x\(String(offset, radix: 16))")
            return 0
        }
        let needsResetBit: UInt8 = needsReset.load(ordering: .acquiring) ? DeviceStatus.deviceNeedsReset.rawValue : 0
        return registers.withLock { r -> UInt32 in
            let q = Int(r.queueSelect)
            let valid = q < r.queues.count
            switch field {
            case .deviceFeatureSelect: return r.deviceFeatureSelect
            case .deviceFeature: return r.deviceFeatureSelect < 2 ? offered.word(Int(r.deviceFeatureSelect)) : 0
            case .driverFeatureSelect: return r.driverFeatureSelect
            case .driverFeature:
                return r.driverFeatureSelect < 2 ? UInt32(truncatingIfNeeded: r.driverFeatures >> (32 * UInt64(r.driverFeatureSelect))) : 0
            case .configMSIXVector: return UInt32(r.configVector)
            case .numQueues: return UInt32(personality.queueCount)  // admin queues are not counted here
            case .deviceStatus:
                if r.resetReadsLeft > 0 {
                    r.resetReadsLeft -= 1
                    // Still resetting: the old status (never 0, or the driver could not tell).
                    let busy = r.statusBeforeReset == 0 ? DeviceStatus.acknowledge.rawValue : r.statusBeforeReset
                    log.record(.statusReadDuringReset(busy))
                    return UInt32(busy)
                }
                return UInt32(r.status | needsResetBit)
            case .configGeneration: return UInt32(r.generation)
            case .queueSelect: return UInt32(r.queueSelect)
            case .queueSize: return valid ? UInt32(r.queues[q].size) : 0
            case .queueMSIXVector: return valid ? UInt32(r.queues[q].vector) : UInt32(VirtioPCIWire.noVector)
            case .queueEnable: return valid && r.queues[q].enabled ? 1 : 0
            case .queueNotifyOff: return valid ? UInt32(q) : 0
            case .queueDescLow: return valid ? UInt32(truncatingIfNeeded: r.queues[q].descriptors) : 0
            case .queueDescHigh: return valid ? UInt32(truncatingIfNeeded: r.queues[q].descriptors >> 32) : 0
            case .queueDriverLow: return valid ? UInt32(truncatingIfNeeded: r.queues[q].driver) : 0
            case .queueDriverHigh: return valid ? UInt32(truncatingIfNeeded: r.queues[q].driver >> 32) : 0
            case .queueDeviceLow: return valid ? UInt32(truncatingIfNeeded: r.queues[q].device) : 0
            case .queueDeviceHigh: return valid ? UInt32(truncatingIfNeeded: r.queues[q].device >> 32) : 0
            case .queueNotifConfigData: return valid ? UInt32(Self.notifConfigData(q)) : 0
            case .queueReset:
                guard valid else { return 0 }
                if r.queues[q].resetReadsLeft > 0 {
                    r.queues[q].resetReadsLeft -= 1
                    return 1
                }
                return 0
            case .adminQueueIndex: return admin == nil ? 0 : UInt32(personality.queueCount)
            case .adminQueueNum: return UInt32(admin?.queueCount ?? 0)
            }
        }
    }

    /// The cookie queue_notif_config_data holds (distinct from the index, so a driver that
    /// sends the index under feature 39 is caught).
    static func notifConfigData(_ queue: Int) -> UInt16 { UInt16(0x4000 | queue) }

    func writeCommon(_ offset: Int, _ width: Int, _ value: UInt64) {
        guard let field = CommonConfigField(offset: offset, width: width) else {
            violation(Self.widthRule, "common config write of \(width) bytes at 0x\(String(offset, radix: 16))")
            return
        }
        let v32 = UInt32(truncatingIfNeeded: value)
        let v16 = UInt16(truncatingIfNeeded: value)
        if field == .deviceStatus {
            writeStatus(UInt8(truncatingIfNeeded: value))
            return
        }
        var start: (Int, QueueStart)?
        registers.withLock { r in
            let q = Int(r.queueSelect)
            let valid = q < r.queues.count
            func queueField(_ name: String, _ body: (inout QueueRegisters) -> Void) {
                guard valid else {
                    violation("transport-pci.tex: queue registers are only meaningful for an existing queue",
                              "\(name) written with queue_select \(q) (the device has \(r.queues.count))")
                    return
                }
                if r.queues[q].enabled {
                    violation("content.tex Virtqueue Configuration: the driver MUST NOT change a queue while it is enabled",
                              "queue \(q) \(name) written while enabled")
                }
                body(&r.queues[q])
                r.queues[q].written.insert(name)
                log.record(.queueField(queue: q, field: name))
            }
            switch field {
            case .deviceFeatureSelect: r.deviceFeatureSelect = v32
            case .driverFeatureSelect: r.driverFeatureSelect = v32
            case .driverFeature:
                if r.status & DeviceStatus.featuresOK.rawValue != 0 {
                    violation("content.tex Device Initialization: features are written before FEATURES_OK and not after",
                              "driver_feature written after FEATURES_OK")
                }
                let sel = r.driverFeatureSelect
                if sel < 2 {
                    let shift = 32 * UInt64(sel)
                    r.driverFeatures = r.driverFeatures & ~(0xFFFF_FFFF << shift) | UInt64(v32) << shift
                }
                log.record(.driverFeatures(select: sel, value: v32))
            case .configMSIXVector:
                r.configVector = faults.refuseVectors || Int(v16) >= msixVectors ? VirtioPCIWire.noVector : v16
            case .queueSelect: r.queueSelect = v16
            case .queueSize:
                queueField("size") { $0.size = v16 }
                if valid, v16 == 0 || Int(v16) > personality.maxQueueSize {
                    violation("transport-pci.tex queue_size: the driver may only lower the size, never to 0",
                              "queue \(q) size \(v16) written (maximum \(personality.maxQueueSize))")
                }
            case .queueMSIXVector:
                // MSI-X: an unusable vector reads back NO_VECTOR.
                let granted = faults.refuseVectors || Int(v16) >= msixVectors ? VirtioPCIWire.noVector : v16
                queueField("vector") { $0.vector = granted }
            case .queueDescLow: queueField("desc") { $0.descriptors = $0.descriptors & ~0xFFFF_FFFF | UInt64(v32) }
            case .queueDescHigh: queueField("desc") { $0.descriptors = $0.descriptors & 0xFFFF_FFFF | UInt64(v32) << 32 }
            case .queueDriverLow: queueField("driver") { $0.driver = $0.driver & ~0xFFFF_FFFF | UInt64(v32) }
            case .queueDriverHigh: queueField("driver") { $0.driver = $0.driver & 0xFFFF_FFFF | UInt64(v32) << 32 }
            case .queueDeviceLow: queueField("device") { $0.device = $0.device & ~0xFFFF_FFFF | UInt64(v32) }
            case .queueDeviceHigh: queueField("device") { $0.device = $0.device & 0xFFFF_FFFF | UInt64(v32) << 32 }
            case .queueEnable:
                guard valid else { return }
                log.record(.queueEnable(queue: q, value: v16))
                guard v16 == 1 else {
                    violation("transport-pci.tex queue_enable: the driver MUST NOT write 0 to queue_enable",
                              "queue \(q): queue_enable written \(v16)")
                    return
                }
                let missing = ["desc", "driver", "device"].filter { !r.queues[q].written.contains($0) }
                if !missing.isEmpty {
                    violation("transport-pci.tex: queue_enable is written after the queue's other fields",
                              "queue \(q) enabled before \(missing.joined(separator: ", ")) was written")
                }
                guard !r.queues[q].enabled else { return }
                r.queues[q].enabled = true
                let neg = FeatureSet(rawValue: r.driverFeatures)
                let vector = r.queues[q].vector
                let fd = vector == VirtioPCIWire.noVector ? nil : interruptFD(vector: vector)
                start = (q, QueueStart(size: Int(r.queues[q].size),
                                       addresses: QueueAddresses(descriptors: r.queues[q].descriptors,
                                                                 driver: r.queues[q].driver, device: r.queues[q].device),
                                       packed: neg.contains(VirtioFeature.ringPacked),
                                       features: RingFeatures(indirect: neg.contains(VirtioFeature.indirectDesc),
                                                              eventIndex: neg.contains(VirtioFeature.eventIdx),
                                                              inOrder: neg.contains(VirtioFeature.inOrder)),
                                       interruptFD: fd))
            case .queueReset:
                guard valid else { return }
                guard FeatureSet(rawValue: r.driverFeatures).contains(VirtioFeature.ringReset),
                      r.status & DeviceStatus.featuresOK.rawValue != 0 else {
                    violation("content.tex Virtqueue Reset: queue_reset is used only when VIRTIO_F_RING_RESET is negotiated",
                              "queue \(q): queue_reset written without RING_RESET")
                    return
                }
                guard v16 == 1 else { return }
                log.record(.queueReset(queue: q))
                queues[q].stop()
                let maxSize = UInt16(personality.maxQueueSize)
                r.queues[q] = QueueRegisters(size: maxSize)
                r.queues[q].resetReadsLeft = faults.queueResetDelayReads
                if faults.queueEnableStuckAfterReset { r.queues[q].enabled = true }
            default:
                violation("transport-pci.tex: the driver does not write read-only fields",
                          "write to read-only common config field at 0x\(String(offset, radix: 16))")
            }
        }
        if let (q, s) = start, let why = queues[q].start(s, memory: arena) {
            violation("content.tex Virtqueue Configuration", "queue \(q): \(why)")
            deviceError("queue \(q): \(why)")
        }
    }

    /// device_status: reset on 0; otherwise the status machine of `content.tex` "Device Status Field".
    func writeStatus(_ value: UInt8) {
        var stopQueues = false
        registers.withLock { r in
            log.record(.status(value))
            if value == 0 {
                r.statusBeforeReset = r.status
                r.resetReadsLeft = faults.resetDelayReads
                r.status = 0
                r.driverFeatures = 0
                r.deviceFeatureSelect = 0
                r.driverFeatureSelect = 0
                r.configVector = VirtioPCIWire.noVector
                r.queueSelect = 0
                r.queues = Array(repeating: QueueRegisters(size: UInt16(personality.maxQueueSize)), count: r.queues.count)
                r.churnLeft = faults.configChurnReads
                stopQueues = true
                admin?.reset()
                // Device state the driver changed (a net device's MAC, filters, pairs) goes back too.
                personality.deviceReset()
                r.deviceConfig = personality.configBytes()
                return
            }
            let old = r.status
            if r.resetReadsLeft > 0 {
                violation("transport-pci.tex: after writing 0 the driver MUST wait for device_status to read 0",
                          "status 0x\(String(value, radix: 16)) written while the reset was still in progress")
            }
            if old & ~value != 0 {
                violation("content.tex Device Status Field: the driver MUST NOT clear a device status bit",
                          "status 0x\(String(old, radix: 16)) -> 0x\(String(value, radix: 16))")
            }
            let added = value & ~old
            let ack = DeviceStatus.acknowledge.rawValue, drv = DeviceStatus.driver.rawValue
            let fok = DeviceStatus.featuresOK.rawValue, dok = DeviceStatus.driverOK.rawValue
            if added & drv != 0, value & ack == 0 {
                violation("content.tex Device Initialization: ACKNOWLEDGE is set before DRIVER", "DRIVER set without ACKNOWLEDGE")
            }
            var newStatus = value
            if added & fok != 0 {
                if value & drv == 0 {
                    violation("content.tex Device Initialization: FEATURES_OK comes after DRIVER", "FEATURES_OK set without DRIVER")
                }
                let accepted = FeatureSet(rawValue: r.driverFeatures)
                let unoffered = accepted.subtracting(offered)
                var ok = true
                if !unoffered.isEmpty {
                    violation("content.tex Feature Bits: the driver MUST NOT accept a feature the device did not offer",
                              "accepted unoffered " + FeatureNames.names(unoffered, deviceType: personality.deviceType).joined(separator: ", "))
                    ok = false
                }
                if !accepted.contains(VirtioFeature.version1) {
                    violation("content.tex Legacy Interface: a modern driver MUST accept VIRTIO_F_VERSION_1",
                              "VIRTIO_F_VERSION_1 not accepted")
                    ok = false
                }
                if faults.rejectFeatures.contains(where: { accepted.contains($0) }) { ok = false }
                if !ok { newStatus &= ~fok }
                if ok { negotiatedBits.store(accepted.rawValue, ordering: .releasing) }
            }
            if added & dok != 0 {
                if value & fok == 0 {
                    violation("content.tex Device Initialization: DRIVER_OK comes after FEATURES_OK", "DRIVER_OK set without FEATURES_OK")
                } else {
                    live.store(true, ordering: .releasing)
                }
            }
            if value & DeviceStatus.failed.rawValue != 0 { live.store(false, ordering: .releasing) }
            r.status = newStatus
        }
        if stopQueues {
            live.store(false, ordering: .releasing)
            needsReset.store(false, ordering: .releasing)
            negotiatedBits.store(0, ordering: .releasing)
            failure.withLock { $0 = nil }
            for q in queues { q.stop() }
        }
    }

    /// A doorbell write: 16 bits of queue index, or 32 bits with VIRTIO_F_NOTIFICATION_DATA.
    func notify(_ offset: Int, _ width: Int, _ value: UInt32) {
        let q = offset / SoftBAR.notifyMultiplier
        guard q < queues.count, offset % SoftBAR.notifyMultiplier == 0 else {
            violation("transport-pci.tex Notification structure layout: the doorbell is at queue_notify_off * notify_off_multiplier",
                      "doorbell write at notify offset \(offset)")
            return
        }
        let negotiated = FeatureSet(rawValue: negotiatedBits.load(ordering: .acquiring))
        let wide = negotiated.contains(VirtioFeature.notificationData)
        if width != (wide ? 4 : 2) {
            violation("transport-pci.tex Available Buffer Notifications: a 32-bit write with VIRTIO_F_NOTIFICATION_DATA, else a 16-bit write",
                      "queue \(q) doorbell written with \(width) bytes")
        }
        let expected = negotiated.contains(VirtioFeature.notifConfigData) ? Self.notifConfigData(q) : UInt16(q)
        if UInt16(truncatingIfNeeded: value) != expected {
            violation("transport-pci.tex Available Buffer Notifications: the low 16 bits carry the queue index (or queue_notif_config_data)",
                      "queue \(q) doorbell value 0x\(String(value, radix: 16)), expected 0x\(String(expected, radix: 16))")
        }
        queues[q].notifyCount.add(1, ordering: .relaxed)
        queues[q].lastNotifyValue.store(value, ordering: .relaxed)
        if removed { return }  // fault status_ff: a removed function does nothing
        guard live.load(ordering: .acquiring) else {
            if !needsReset.load(ordering: .acquiring) {
                violation("content.tex Device Initialization: no available-buffer notification before DRIVER_OK",
                          "queue \(q) notified before DRIVER_OK")
            }
            return
        }
        // A device without bus mastering cannot reach memory: the notify is ignored, as hardware would.
        guard busMaster.load(ordering: .acquiring) else {
            violation("PCI: a function does no DMA until the driver sets Bus Master Enable",
                      "queue \(q) notified with bus mastering off")
            return
        }
        serve(queue: q, negotiated: negotiated)
    }

    /// Serves queue `q`: a request queue with the personality, an admin queue with the admin responder.
    func serve(queue q: Int, negotiated: FeatureSet) {
        let why: String?
        if q >= personality.queueCount, let admin {
            why = queues[q].process(personality: admin, memory: arena, negotiated: negotiated, faults: faults, isr: isr,
                                    stopped: stopped)
        } else {
            why = queues[q].process(personality: personality, memory: arena, negotiated: negotiated, faults: faults,
                                    isr: isr, stopped: stopped)
        }
        if let why { deviceError(why) }
    }
}
