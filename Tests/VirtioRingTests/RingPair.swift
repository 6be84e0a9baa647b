import VirtioRing

/// The two ring layouts, for parameterised tests.
enum Layout: String, CaseIterable, Sendable, CustomStringConvertible {
    case split, packed
    var description: String { rawValue }
}

/// A driver side and a device side over one DMA arena, with the operations tests need.
/// Tests talk to it through this existential; the ring code inside is specialised.
protocol RingPair: AnyObject {
    var layout: Layout { get }
    var queueSize: Int { get }
    var arena: DMAArena { get }
    var ring: UnsafeMutableRawPointer { get }

    func add(readable: [BufferElement], writable: [BufferElement]) throws(RingError) -> UInt16
    func addOne(_ e: BufferElement, writable: Bool) throws(RingError) -> UInt16
    func poll() throws(RingError) -> UsedBuffer?
    func addBurst(_ elements: [BufferElement], writable: Bool) throws(RingError) -> [UInt16]
    func pollBurst(maximum: Int) throws(RingError) -> [UsedBuffer]
    var freeDescriptors: Int { get }
    var inFlight: Int { get }
    var driverViolation: RingViolation? { get }
    func driverNeedsNotification() -> Bool
    func notificationData(queueIndex: UInt16) -> UInt32
    func disableUsedNotifications()
    func enableUsedNotifications() -> Bool
    func enableUsedNotificationsDelayed() -> Bool
    var driverPosition: RingPosition { get }

    func pop() throws(RingError) -> (chain: AvailableChain, elements: [ChainElement])?
    func pushUsed(id: UInt16, length: UInt32, ringDescriptors: UInt16)
    func pushBatch(lastID: UInt16, length: UInt32, buffers: UInt16, ringDescriptors: UInt16)
    func pushUsedBurst(_ used: [(id: UInt16, length: UInt32, ringDescriptors: UInt16)])
    func deviceNeedsInterrupt() -> Bool
    func disableAvailNotifications()
    func enableAvailNotifications() -> Bool
    var devicePosition: RingPosition { get }
    var deviceViolation: RingViolation? { get }
    /// Replaces the device side by one resumed from `position` (suspend/resume).
    func resumeDevice(from position: RingPosition)
}

final class Pair<D: DriverRing & ~Copyable, V: DeviceRing & ~Copyable>: RingPair {
    let layout: Layout
    let queueSize: Int
    let arena: DMAArena
    let ring: UnsafeMutableRawPointer
    var driver: D
    var device: V
    let scratch: UnsafeMutableBufferPointer<ChainElement>
    let makeDevice: (RingPosition?) -> V

    init(layout: Layout, queueSize: Int, arena: DMAArena, ring: UnsafeMutableRawPointer, driver: consuming D,
         chainLimit: Int, makeDevice: @escaping (RingPosition?) -> V) {
        self.layout = layout
        self.queueSize = queueSize
        self.arena = arena
        self.ring = ring
        self.driver = driver
        self.device = makeDevice(nil)
        self.makeDevice = makeDevice
        scratch = .allocate(capacity: chainLimit)
    }
    deinit { scratch.deallocate() }

    func add(readable: [BufferElement], writable: [BufferElement]) throws(RingError) -> UInt16 {
        try driver.add(readable: readable, writable: writable)
    }
    func addOne(_ e: BufferElement, writable: Bool) throws(RingError) -> UInt16 { try driver.add(e, deviceWritable: writable) }
    func poll() throws(RingError) -> UsedBuffer? { try driver.pollUsed() }
    func addBurst(_ elements: [BufferElement], writable: Bool) throws(RingError) -> [UInt16] {
        var tokens = [UInt16](repeating: 0xffff, count: elements.count)
        let n = try tokens.withUnsafeMutableBufferPointer { t throws(RingError) in
            try driver.addBurst(elements.span, deviceWritable: writable, tokens: t.baseAddress!)
        }
        return Array(tokens[0..<n])
    }
    func pollBurst(maximum: Int) throws(RingError) -> [UsedBuffer] {
        var used = [UsedBuffer](repeating: UsedBuffer(token: 0xffff, length: 0), count: maximum)
        let n = try used.withUnsafeMutableBufferPointer { u throws(RingError) in
            try driver.pollUsed(into: u.baseAddress!, maximum: maximum)
        }
        return Array(used[0..<n])
    }
    var freeDescriptors: Int { driver.freeDescriptors }
    var inFlight: Int { driver.buffersInFlight }
    var driverViolation: RingViolation? { driver.violation }
    func driverNeedsNotification() -> Bool { driver.needsNotification() }
    func notificationData(queueIndex: UInt16) -> UInt32 { driver.notificationData(queueIndex: queueIndex) }
    func disableUsedNotifications() { driver.disableUsedNotifications() }
    func enableUsedNotifications() -> Bool { driver.enableUsedNotifications() }
    func enableUsedNotificationsDelayed() -> Bool { driver.enableUsedNotificationsDelayed() }
    var driverPosition: RingPosition { driver.position }

    func pop() throws(RingError) -> (chain: AvailableChain, elements: [ChainElement])? {
        guard let chain = try device.popAvailable(into: scratch) else { return nil }
        return (chain, Array(scratch[0..<chain.elementCount]))
    }
    func pushUsed(id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        device.pushUsed(id: id, length: length, ringDescriptors: ringDescriptors)
    }
    func pushBatch(lastID: UInt16, length: UInt32, buffers: UInt16, ringDescriptors: UInt16) {
        device.pushUsedBatch(lastID: lastID, length: length, buffers: buffers, ringDescriptors: ringDescriptors)
    }
    func pushUsedBurst(_ used: [(id: UInt16, length: UInt32, ringDescriptors: UInt16)]) {
        let ids = used.map(\.id), lengths = used.map(\.length), descriptors = used.map(\.ringDescriptors)
        device.pushUsedBurst(ids: ids, lengths: lengths, ringDescriptors: descriptors, count: used.count)
    }
    func deviceNeedsInterrupt() -> Bool { device.needsInterrupt() }
    func disableAvailNotifications() { device.disableAvailNotifications() }
    func enableAvailNotifications() -> Bool { device.enableAvailNotifications() }
    var devicePosition: RingPosition { device.position }
    var deviceViolation: RingViolation? { device.violation }
    func resumeDevice(from position: RingPosition) { device = makeDevice(position) }
}

/// Builds a ring pair in a fresh arena. `indirectMax` > 1 gives the driver indirect tables.
func makePair(_ layout: Layout, size: Int, features: RingFeatures = RingFeatures(), indirectMax: Int = 0,
              chainLimit: Int? = nil, dataBytes: Int = 1 << 20) throws -> any RingPair {
    let limit = chainLimit ?? max(size, indirectMax, 1)
    let ringBytes = layout == .split ? try SplitLayout(queueSize: size).totalSize : try PackedLayout(queueSize: size).totalSize
    let poolBytes = IndirectPool.size(queueSize: size, maxElements: indirectMax)
    let arena = try DMAArena(size: ringBytes + poolBytes + dataBytes + 8192)
    let ring = try arena.allocate(length: ringBytes, alignment: 4096)
    let pool = indirectMax > 1
        ? IndirectPool(area: try arena.allocate(length: poolBytes, alignment: 16).area, maxElements: indirectMax) : nil
    switch layout {
    case .split:
        let l = try SplitLayout(queueSize: size)
        let driver = SplitDriverQueue(layout: l, memory: ring.pointer, features: features, indirect: pool)
        return Pair(layout: layout, queueSize: size, arena: arena, ring: ring.pointer, driver: driver, chainLimit: limit) {
            SplitDeviceQueue(layout: l, memory: ring.pointer, deviceMemory: arena, features: features, resuming: $0)
        }
    case .packed:
        let l = try PackedLayout(queueSize: size)
        let driver = PackedDriverQueue(layout: l, memory: ring.pointer, features: features, indirect: pool)
        return Pair(layout: layout, queueSize: size, arena: arena, ring: ring.pointer, driver: driver, chainLimit: limit) {
            PackedDeviceQueue(layout: l, memory: ring.pointer, deviceMemory: arena, features: features, resuming: $0)
        }
    }
}
