/// The device side of a split virtqueue: reads what the driver made available,
/// validates it, and writes used entries.
public struct SplitDeviceQueue<Memory: DeviceMemory>: ~Copyable, DeviceRing {
    public let queueSize: Int
    public let features: RingFeatures
    @usableFromInline let mask: UInt16
    @usableFromInline let desc: UnsafeMutableRawPointer
    @usableFromInline let avail: UnsafeMutableRawPointer
    @usableFromInline let used: UnsafeMutableRawPointer
    @usableFromInline let usedEventOffset: Int
    @usableFromInline let availEventOffset: Int
    @usableFromInline let memory: Memory

    @usableFromInline var lastAvailIdx: UInt16
    @usableFromInline var availIdxSeen: UInt16
    /// Shadow of used.idx (free-running).
    @usableFromInline var usedIdx: UInt16
    /// used.idx when the device last decided about interrupting.
    @usableFromInline var signalledIdx: UInt16
    public private(set) var violation: RingViolation?

    /// Attaches to rings the driver set up. `resuming` continues from a saved position
    /// (its used index is taken from used.idx in memory, as vhost does).
    public init(layout: SplitLayout, descriptors: UnsafeMutableRawPointer, driverArea: UnsafeMutableRawPointer,
                deviceArea: UnsafeMutableRawPointer, memory: Memory, features: RingFeatures, resuming: RingPosition? = nil) {
        queueSize = layout.queueSize
        self.features = features
        mask = UInt16(truncatingIfNeeded: layout.queueSize - 1)
        desc = descriptors
        avail = driverArea
        used = deviceArea
        usedEventOffset = layout.usedEventOffset
        availEventOffset = layout.availEventOffset
        self.memory = memory
        lastAvailIdx = resuming?.nextAvail ?? 0
        availIdxSeen = lastAvailIdx
        usedIdx = resuming == nil ? 0 : deviceArea.loadAcquire16(at: 2)
        signalledIdx = usedIdx
    }

    public init(layout: SplitLayout, memory ring: UnsafeMutableRawPointer, deviceMemory: Memory, features: RingFeatures,
                resuming: RingPosition? = nil) {
        self.init(layout: layout, descriptors: ring + layout.descriptorOffset, driverArea: ring + layout.availOffset,
                  deviceArea: ring + layout.usedOffset, memory: deviceMemory, features: features, resuming: resuming)
    }

    @inlinable @inline(__always)
    public mutating func popAvailable(into elements: UnsafeMutableBufferPointer<ChainElement>) throws(RingError) -> AvailableChain? {
        if lastAvailIdx == availIdxSeen {
            // Read once per avail-idx refresh, not per chain: breakQueue rewinds availIdxSeen to here.
            if let v = violation { throw .broken(v) }
            // Acquire: the ring entry and descriptors are read only after the idx that publishes them.
            let idx = avail.loadAcquire16(at: 2)
            if idx == lastAvailIdx { return nil }
            guard Int(idx &- lastAvailIdx) <= queueSize else {
                throw breakQueue(.availIndexJump(from: lastAvailIdx, to: idx, queueSize: queueSize))
            }
            availIdxSeen = idx
        }
        let head = avail.loadLE(at: 4 &+ Int(lastAvailIdx & mask) &* 2, as: UInt16.self)
        guard Int(head) < queueSize else { throw breakQueue(.headOutOfRange(head: head, queueSize: queueSize)) }
        lastAvailIdx &+= 1
        var collector = ChainCollector(elements)
        var i = head
        var descriptors = 0
        while true {
            descriptors &+= 1
            guard descriptors <= queueSize else { throw breakQueue(.chainTooLong(limit: queueSize)) }
            let d = desc + Int(i) &* 16
            let address = d.loadLE(at: 0, as: UInt64.self)
            let length = d.loadLE(at: 8, as: UInt32.self)
            let flags = d.loadLE(at: 12, as: UInt16.self)
            if flags & DescriptorFlags.indirect != 0 {
                guard features.indirect else { throw breakQueue(.indirectNotNegotiated(position: i)) }
                guard flags & DescriptorFlags.next == 0 else { throw breakQueue(.indirectWithNext(position: i)) }
                if let v = collector.appendIndirect(table: address, length: length, memory: memory, split: true) {
                    throw breakQueue(v)
                }
                break
            }
            if let v = collector.append(address: address, length: length, writable: flags & DescriptorFlags.write != 0,
                                        position: i) {
                throw breakQueue(v)
            }
            guard flags & DescriptorFlags.next != 0 else { break }
            let next = d.loadLE(at: 14, as: UInt16.self)
            guard Int(next) < queueSize else { throw breakQueue(.nextOutOfRange(next: next, queueSize: queueSize)) }
            i = next
        }
        return collector.chain(id: head, ringDescriptors: UInt16(truncatingIfNeeded: descriptors))
    }

    @inlinable @inline(__always)
    public mutating func pushUsed(id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        pushUsedBatch(lastID: id, length: length, buffers: 1, ringDescriptors: ringDescriptors)
    }

    /// Split in-order: one entry with the last buffer's head, at the offset of the first; idx += buffers.
    @inlinable @inline(__always)
    public mutating func pushUsedBatch(lastID: UInt16, length: UInt32, buffers: UInt16, ringDescriptors: UInt16) {
        let entry = used + (4 &+ Int(usedIdx & mask) &* 8)
        entry.storeLE(UInt32(lastID), at: 0)
        entry.storeLE(length, at: 4)
        usedIdx &+= buffers
        // Write barrier before the used idx store: the driver acquires idx, then reads the entry.
        used.storeRelease16(usedIdx, at: 2)
    }

    @inlinable
    public mutating func pushUsedBurst(ids: UnsafePointer<UInt16>, lengths: UnsafePointer<UInt32>,
                                       ringDescriptors: UnsafePointer<UInt16>, count: Int) {
        guard count > 0 else { return }
        var idx = usedIdx
        for i in 0..<count {
            let entry = used + (4 &+ Int(idx & mask) &* 8)
            entry.storeLE(UInt32(ids[i]), at: 0)
            entry.storeLE(lengths[i], at: 4)
            idx &+= 1
        }
        usedIdx = idx
        // One write barrier before the one used idx store covers every entry of the burst.
        used.storeRelease16(idx, at: 2)
    }

    /// Writes a raw used entry (the software device's fault injection: ids the driver never gave).
    public mutating func pushRawUsed(id: UInt32, length: UInt32, advance: UInt16 = 1) {
        let entry = used + (4 &+ Int(usedIdx & mask) &* 8)
        entry.storeLE(id, at: 0)
        entry.storeLE(length, at: 4)
        usedIdx &+= advance
        used.storeRelease16(usedIdx, at: 2)
    }

    @inlinable @inline(__always)
    public mutating func needsInterrupt() -> Bool {
        let old = signalledIdx
        let new = usedIdx
        signalledIdx = new
        guard old != new else { return false }
        // Full barrier between the used idx store and reading avail.flags / used_event.
        fullBarrier()
        return splitWantsEvent(avail, eventOffset: usedEventOffset, eventIndex: features.eventIndex,
                               flag: SplitRingFlags.noInterrupt, new: new, old: old)
    }

    public mutating func disableAvailNotifications() {
        splitSetEvents(used, eventOffset: availEventOffset, eventIndex: features.eventIndex, suppress: true,
                       index: lastAvailIdx, flag: SplitRingFlags.noNotify)
    }

    public mutating func enableAvailNotifications() -> Bool {
        splitSetEvents(used, eventOffset: availEventOffset, eventIndex: features.eventIndex, suppress: false,
                       index: lastAvailIdx, flag: SplitRingFlags.noNotify)
        fullBarrier()
        return avail.loadAcquire16(at: 2) != lastAvailIdx
    }

    @usableFromInline
    mutating func breakQueue(_ v: RingViolation) -> RingError {
        violation = v
        availIdxSeen = lastAvailIdx  // the next pop takes the path that checks the violation
        return .broken(v)
    }

    public var position: RingPosition { RingPosition(split: lastAvailIdx, nextUsed: usedIdx) }
}
