import Synchronization
import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// What a vhost-user backend needs to host the software function: vhost-user has no registers,
/// so the backend drives the device's queues directly from the frontend's messages (features,
/// ring addresses, call eventfds, kicks) instead of through the PCI register model.
extension SoftPCIFunction {
    /// Bits a vhost-user frontend may see: the device's, minus what needs PCI registers (per-queue
    /// reset, notification data, admin queues) or a backend-request channel (IOMMU translation).
    public var hostedFeatures: FeatureSet {
        var f = offered.subtracting([VirtioFeature.ringReset, VirtioFeature.notificationData, VirtioFeature.notifConfigData,
                                     VirtioFeature.adminVQ, VirtioFeature.accessPlatform, VirtioFeature.srIOV])
        if personality.statisticsQueue != nil, personality.deviceType == .block { f.remove(BlockFeature.draftStatsVQ) }
        return f
    }

    /// Request queues (admin and draft statistics queues excepted: vhost-user reaches neither; the
    /// statistics queue comes after the request queues).
    public var hostedQueueCount: Int { personality.vhostQueueCount }
    public var hostedMaxQueueSize: Int { personality.maxQueueSize }
    /// What GET_QUEUE_NUM answers (virtqueues for blk, queue pairs for net).
    public var hostedQueueNumber: Int { personality.vhostQueueNumber }

    private func hostedRingsChanged() {
        personality.hostedRingsChanged { q in registers.withLock { $0.queues[q].enabled } }
    }

    /// The device-specific configuration as the driver would read it.
    public var hostedConfig: [UInt8] { deviceConfigSnapshot }

    /// The frontend's SET_FEATURES: the status machine is walked for it (ACKNOWLEDGE, DRIVER,
    /// FEATURES_OK, DRIVER_OK) so the conformance log judges the driver's choice as over PCI.
    /// Returns why the device refuses them, or nil. A repeat with the same bits changes nothing.
    public func hostAccept(features: FeatureSet) -> String? {
        // A repeat (QEMU sends SET_FEATURES twice) changes nothing, unless the device failed since:
        // then the walk below resets it, as a driver's reset would over PCI.
        if status & DeviceStatus.driverOK.rawValue != 0, negotiatedFeatures == features, live.load(ordering: .acquiring),
           !needsReset.load(ordering: .acquiring) { return nil }
        guard !anyQueueRunning else { return "features cannot change while rings run" }
        let unoffered = features.subtracting(hostedFeatures)
        guard unoffered.isEmpty else {
            return "features not offered: " + FeatureNames.names(unoffered, deviceType: personality.deviceType).joined(separator: ", ")
        }
        writeStatus(0)
        let ack = DeviceStatus.acknowledge.rawValue, drv = DeviceStatus.driver.rawValue
        writeStatus(ack)
        writeStatus(ack | drv)
        registers.withLock { $0.driverFeatures = features.rawValue }
        writeStatus(ack | drv | DeviceStatus.featuresOK.rawValue)
        guard status & DeviceStatus.featuresOK.rawValue != 0 else {
            return "the device refused features " + FeatureNames.names(features, deviceType: personality.deviceType).joined(separator: " ")
        }
        writeStatus(ack | drv | DeviceStatus.featuresOK.rawValue | DeviceStatus.driverOK.rawValue)
        busMaster.store(true, ordering: .releasing)
        return nil
    }

    /// Starts request queue `queue` on rings at device (guest-physical) addresses, continuing from
    /// `resume`; `call` is the eventfd to signal (nil: none, the frontend polls). Nil or why not.
    public func hostStartQueue(_ queue: Int, size: Int, addresses: QueueAddresses, resume: RingPosition?, call: Int32?) -> String? {
        guard queue >= 0, queue < hostedQueueCount else { return "no queue \(queue)" }
        guard size >= 1, size <= personality.maxQueueSize else { return "queue size \(size) is outside 1...\(personality.maxQueueSize)" }
        let neg = negotiatedFeatures
        let start = QueueStart(size: size, addresses: addresses, packed: neg.contains(VirtioFeature.ringPacked),
                               features: RingFeatures(indirect: neg.contains(VirtioFeature.indirectDesc),
                                                      eventIndex: neg.contains(VirtioFeature.eventIdx),
                                                      inOrder: neg.contains(VirtioFeature.inOrder)),
                               interruptFD: call, resume: resume)
        if let why = queues[queue].start(start, memory: arena) { return why }
        registers.withLock { $0.queues[queue].enabled = true }
        hostedRingsChanged()
        return nil
    }

    /// Stops queue `queue` and says where its device side stood (nil when it was not running).
    public func hostStopQueue(_ queue: Int) -> RingPosition? {
        guard queue >= 0, queue < hostedQueueCount else { return nil }
        let at = queues[queue].stopAndReport()
        registers.withLock { $0.queues[queue].enabled = false }
        hostedRingsChanged()
        return at
    }

    /// Points queue `queue`'s used-buffer notifications at `fd` (nil: none). The caller keeps the
    /// old eventfd open until this returns: the queue signals under its lock, which this takes.
    public func hostSetCall(_ queue: Int, fd: Int32?) {
        guard queue >= 0, queue < hostedQueueCount else { return }
        queues[queue].state.withLock { $0.interruptFD = fd }
    }

    /// A kick on queue `queue`: serve what is available.
    public func hostKick(_ queue: Int) {
        guard queue >= 0, queue < hostedQueueCount, live.load(ordering: .acquiring) else { return }
        serve(queue: queue, negotiated: negotiatedFeatures)
    }

    /// Whether queue `queue` is running.
    public func hostQueueRunning(_ queue: Int) -> Bool { queue >= 0 && queue < queues.count && queues[queue].position != nil }

    /// Why the device stopped serving (DEVICE_NEEDS_RESET), if it did.
    public var hostFailure: String? { failure.withLock { $0 } }
}
