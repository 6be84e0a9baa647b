import Logging
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// Reads device-specific configuration inside one config_generation window.
public struct ConfigReader {
    let read: (Int, Int) throws(VirtioError) -> UInt64
    public func u8(_ offset: Int) throws(VirtioError) -> UInt8 { UInt8(truncatingIfNeeded: try read(offset, 1)) }
    public func u16(_ offset: Int) throws(VirtioError) -> UInt16 { UInt16(truncatingIfNeeded: try read(offset, 2)) }
    public func u32(_ offset: Int) throws(VirtioError) -> UInt32 { UInt32(truncatingIfNeeded: try read(offset, 4)) }
    /// 64-bit fields are read as two 32-bit halves (PCI access-width rule); the generation loop makes them consistent.
    public func u64(_ offset: Int) throws(VirtioError) -> UInt64 {
        let lo = try read(offset, 4), hi = try read(offset + 4, 4)
        return lo | hi << 32
    }
    /// A field of `width` bytes (1, 2, 4, or 8 as two halves).
    public func read(offset: Int, width: Int) throws(VirtioError) -> UInt64 {
        width == 8 ? try u64(offset) : try read(offset, width)
    }
}

/// What a queue was set up with, for `info`.
public struct QueueInfo: Sendable, Equatable, Codable {
    public let index: Int
    public let size: Int
    public let maxSize: Int
    public let layout: QueueLayout
    public let inOrder: Bool
    public let eventIndex: Bool
    public let indirect: Bool
    public let vector: UInt16?
}

/// A virtio device being driven over a transport: the initialisation sequence of the spec
/// (`content.tex` "Device Initialization"), queue set-up for the negotiated layout, config
/// reads consistent under config_generation, per-queue reset, and status checks.
public final class VirtioDevice<T: VirtioTransport> {
    public let transport: T
    public let logger: Logger
    public private(set) var offered: FeatureSet = []
    public private(set) var negotiated: FeatureSet = []
    public private(set) var queues: [QueueInfo] = []
    /// How long to wait for a reset (device_status or queue_reset reading back 0).
    public var resetTimeoutMilliseconds = 1000

    public init(transport: T, logger: Logger = Logger(label: "virtio.core")) {
        self.transport = transport
        self.logger = logger
    }

    public var deviceType: VirtioDeviceType? { transport.deviceType }
    public func has(_ bit: Int) -> Bool { negotiated.contains(bit) }

    /// Writes 0 to device_status and waits until it reads 0 (`transport-pci.tex`: the driver MUST).
    public func reset() throws(VirtioError) {
        try transport.writeStatus([])
        var last: UInt8 = 0
        let done = try PollDeadline.poll(milliseconds: resetTimeoutMilliseconds) { () throws(VirtioError) -> Bool? in
            last = try transport.readStatus().rawValue
            return last == 0 ? true : nil
        }
        guard done != nil else { throw .resetTimeout(status: last) }
        queues = []
        negotiated = []
    }

    /// Steps 1-5 of initialisation: reset, ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK
    /// and its re-read. On any failure after ACKNOWLEDGE the device is left with FAILED set.
    /// `refine` sees the policy's choice before it is written and may drop bits (a device-type
    /// driver's dependency rules, or a config value read before FEATURES_OK that rules a bit out).
    @discardableResult
    public func initialize(policy: FeaturePolicy, deviceTypeBits: FeatureSet,
                           refine: (FeatureSet) throws(VirtioError) -> FeatureSet = { $0 }) throws(VirtioError) -> FeatureSet {
        try reset()
        var status: DeviceStatus = .acknowledge
        try transport.writeStatus(status)
        status.insert(.driver)
        try transport.writeStatus(status)
        do throws(VirtioError) {
            offered = try transport.readDeviceFeatures()
            logger.debug("offered features", metadata: ["features": "\(names(offered))"])
            let chosen = try policy.negotiate(offered: offered, deviceTypeBits: deviceTypeBits, deviceType: deviceType,
                                              transportCannot: transport.unsupportedFeatures)
            let accept = try refine(chosen).intersection(chosen)  // refine may only drop bits
            let lost = policy.required.subtracting(accept)
            guard lost.isEmpty else { throw VirtioError.requiredFeatureNotOffered(names(lost)) }
            try transport.writeDriverFeatures(accept)
            status.insert(.featuresOK)
            try transport.writeStatus(status)
            // Re-read: a device that cannot support the subset leaves FEATURES_OK clear.
            let back = try transport.readStatus()
            guard back.contains(.featuresOK) else { throw VirtioError.featuresRejected(names(accept)) }
            negotiated = accept
            logger.debug("negotiated features", metadata: ["features": "\(names(accept))"])
            return accept
        } catch {
            fail()
            throw error
        }
    }

    /// Sets FAILED (best effort: the device may be gone).
    public func fail() {
        if let s = try? transport.readStatus() {
            try? transport.writeStatus(s.union(.failed))
        }
    }

    /// Sets DRIVER_OK: after it, and only after it, buffers may be notified.
    public func driverOK() throws(VirtioError) {
        let s = try transport.readStatus()
        try checkHealth(s)
        try transport.writeStatus(s.union(.driverOK))
    }

    /// Throws when the device has set DEVICE_NEEDS_RESET or FAILED.
    public func checkHealth(_ status: DeviceStatus? = nil) throws(VirtioError) {
        let s: DeviceStatus
        if let status { s = status } else { s = try transport.readStatus() }
        // All ones is no status at all: a removed function answers every read with 0xFF.
        if s.rawValue == 0xFF { throw .deviceGone }
        if s.contains(.deviceNeedsReset) { throw .deviceNeedsReset }
        if s.contains(.failed) { throw .deviceFailed(status: s.rawValue) }
    }

    /// Feature names for this device.
    public func names(_ set: FeatureSet) -> [String] { FeatureNames.names(set, deviceType: deviceType) }

    /// Reads device config with `body`, retrying until config_generation is the same before and
    /// after (`content.tex`: reads of more than 32 bits, or several fields, MUST loop on it).
    public func readConfig<R>(_ body: (ConfigReader) throws(VirtioError) -> R) throws(VirtioError) -> R {
        let length = transport.deviceConfigLength
        let reader = ConfigReader { [transport] (offset: Int, width: Int) throws(VirtioError) -> UInt64 in
            guard offset >= 0, offset + width <= length else {
                throw .configOutOfRange(offset: offset, width: width, length: length)
            }
            return try transport.readDeviceConfig(offset: offset, width: width)
        }
        let attempts = 64
        for _ in 0..<attempts {
            let before = try transport.configGeneration()
            let value = try body(reader)
            if try transport.configGeneration() == before { return value }
        }
        throw .configUnstable(attempts: attempts)
    }

    /// Allocates, zeroes and programs queue `index` for the negotiated layout, then enables it.
    /// - Parameters:
    ///   - size: wanted size (nil: the device's maximum); clamped to the maximum, rounded down to a
    ///     power of two for split rings.
    ///   - indirectElements: the largest buffer (in elements) to put in an indirect table.
    ///   - vector: an MSI-X vector to program, nil for poll mode.
    ///   - admin: an admin queue (VIRTIO_F_ADMIN_VQ): `index` must lie in admin_queue_index..+num.
    ///   - reusing: the ring memory of an earlier set-up of this queue (recovery after a device reset);
    ///     its indirect tables come with it.
    public func makeQueue(_ index: Int, size: Int? = nil, indirectElements: Int = 0,
                          vector: UInt16? = nil, admin: Bool = false, reusing: DMARegion? = nil) throws(VirtioError) -> Virtqueue<T> {
        if admin {
            guard has(VirtioFeature.adminVQ) else { throw .featureNotNegotiated("VIRTIO_F_ADMIN_VQ") }
            let range = try transport.adminQueueRange()
            guard range.contains(index) else { throw .noSuchQueue(queue: index, available: range.upperBound) }
        } else {
            let count = try transport.numQueues()
            guard index >= 0, index < count else { throw .noSuchQueue(queue: index, available: count) }
        }
        guard !queues.contains(where: { $0.index == index }) else { throw .queueAlreadyEnabled(queue: index) }
        let maxSize = try transport.queueMaxSize(index)
        guard maxSize > 0 else { throw .queueUnavailable(queue: index) }
        let packed = has(VirtioFeature.ringPacked)
        var n = min(size ?? maxSize, maxSize, maxQueueSize)
        if !packed { n = 1 << (Int.bitWidth - 1 - n.leadingZeroBitCount) }  // largest power of two <= n
        guard n >= 1, n <= maxQueueSize else {
            throw .invalidQueueSize(queue: index, size: size ?? maxSize, maximum: maxSize, packed: packed)
        }
        let features = RingFeatures(indirect: has(VirtioFeature.indirectDesc), eventIndex: has(VirtioFeature.eventIdx),
                                    inOrder: has(VirtioFeature.inOrder))
        let q = try buildQueue(index: index, size: n, packed: packed, features: features,
                               indirectElements: indirectElements, vector: vector, memory: reusing)
        try transport.enableQueue(index)
        queues.append(QueueInfo(index: index, size: n, maxSize: maxSize, layout: packed ? .packed : .split,
                                inOrder: features.inOrder, eventIndex: features.eventIndex,
                                indirect: features.indirect && indirectElements > 1, vector: q.vector))
        logger.debug("queue ready", metadata: ["queue": "\(index)", "size": "\(n)", "packed": "\(packed)"])
        return q
    }

    /// VIRTIO_F_RING_RESET: resets one queue (its buffers are dropped; the caller owns their fate)
    /// and sets it up again from a clean ring in the same memory.
    public func resetQueue(_ queue: inout Virtqueue<T>) throws(VirtioError) {
        guard has(VirtioFeature.ringReset) else { throw .featureNotNegotiated("VIRTIO_F_RING_RESET") }
        let index = queue.index
        try transport.resetQueue(index)
        let fresh = try buildQueue(index: index, size: queue.size, packed: queue.layout == .packed, features: queue.features,
                                   indirectElements: 0, vector: queue.vector, memory: queue.ringMemory)
        queue = fresh
        try transport.enableQueue(index)
    }

    /// Sets up a ring in fresh memory, or in `memory` from an earlier set-up of the same queue.
    /// Indirect tables live after the ring in the same region, so their size is read off its length.
    private func buildQueue(index: Int, size n: Int, packed: Bool, features: RingFeatures, indirectElements: Int,
                            vector: UInt16?, memory: DMARegion?) throws(VirtioError) -> Virtqueue<T> {
        let areas: RingAreas
        do { areas = try RingAreas(packed: packed, queueSize: n) } catch {
            throw .invalidQueueSize(queue: index, size: n, maximum: n, packed: packed)
        }
        let ringSpan = (areas.totalSize + 63) & ~63
        let tableElements = memory.map { ($0.length - ringSpan) / (16 * n) } ?? indirectElements
        let useIndirect = features.indirect && tableElements > 1
        let total = ringSpan + (useIndirect ? IndirectPool.size(queueSize: n, maxElements: tableElements) : 0)
        let region: DMARegion
        if let memory {
            region = memory
        } else {
            do { region = try transport.dma.allocate(length: total, alignment: 4096) } catch { throw .dma(error) }
        }
        let pool = useIndirect
            ? IndirectPool(area: region.slice(offset: ringSpan, length: total - ringSpan).area, maxElements: tableElements)
            : nil
        let addresses = QueueAddresses(descriptors: region.deviceAddress + UInt64(areas.descriptors),
                                       driver: region.deviceAddress + UInt64(areas.driver),
                                       device: region.deviceAddress + UInt64(areas.device))
        // The ring zeroes its areas as the driver MUST before handing them to the device.
        let ring = DriverQueue(areas: areas, memory: region.pointer, features: features, indirect: pool)
        let setup: QueueSetup
        do {
            setup = try transport.setUpQueue(index, size: n, addresses: addresses, vector: vector, features: negotiated)
        } catch {
            _ = consume ring
            throw error
        }
        if setup.vector == nil, vector != nil {
            logger.warning("MSI-X vector refused; queue runs in poll mode",
                           metadata: ["queue": "\(index)", "vector": "\(vector!)"])
        }
        var q = Virtqueue(index: index, size: n, layout: packed ? .packed : .split, features: features,
                          vector: setup.vector, ringMemory: region, ring: ring, transport: transport,
                          target: setup.notify)
        if setup.vector == nil { q.disableUsedNotifications() }  // poll mode: no interrupts wanted
        return q
    }
}
