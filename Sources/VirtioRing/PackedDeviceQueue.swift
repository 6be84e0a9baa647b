/// The device side of a packed virtqueue: reads available descriptors, validates
/// them, and writes used descriptors.
public struct PackedDeviceQueue<Memory: DeviceMemory>: ~Copyable, DeviceRing {
    public let queueSize: Int
    public let features: RingFeatures
    @usableFromInline let size16: UInt16
    @usableFromInline let desc: UnsafeMutableRawPointer
    /// Driver Event Suppression (read here: controls used-buffer notifications).
    @usableFromInline let driverEvent: UnsafeMutableRawPointer
    /// Device Event Suppression (written here: controls available-buffer notifications).
    @usableFromInline let deviceEvent: UnsafeMutableRawPointer
    @usableFromInline let memory: Memory

    @usableFromInline var nextAvail: UInt16
    /// The Driver Ring Wrap Counter as the device tracks it.
    @usableFromInline var availWrap: Bool
    /// AVAIL and USED as an available descriptor at nextAvail has them (`availBits(availWrap)`);
    /// 0xFFFF, which no flags match, once the queue is broken, so pop's one compare also catches that.
    @usableFromInline var availFlags: UInt16
    @usableFromInline var nextUsed: UInt16
    /// Device Ring Wrap Counter.
    @usableFromInline var usedWrap: Bool
    /// Descriptors marked used since the last interrupt decision.
    @usableFromInline var usedSinceSignal: Int = 0
    public private(set) var violation: RingViolation?

    public init(layout: PackedLayout, descriptors: UnsafeMutableRawPointer, driverArea: UnsafeMutableRawPointer,
                deviceArea: UnsafeMutableRawPointer, memory: Memory, features: RingFeatures, resuming: RingPosition? = nil) {
        queueSize = layout.queueSize
        size16 = UInt16(truncatingIfNeeded: layout.queueSize)
        self.features = features
        desc = descriptors
        driverEvent = driverArea
        deviceEvent = deviceArea
        self.memory = memory
        let start = resuming ?? RingPosition(packed: 0, availWrap: true, nextUsed: 0, usedWrap: true)
        nextAvail = start.nextAvail
        availWrap = start.availWrap
        availFlags = Self.availBits(start.availWrap)
        nextUsed = start.nextUsed
        usedWrap = start.usedWrap
    }

    public init(layout: PackedLayout, memory ring: UnsafeMutableRawPointer, deviceMemory: Memory, features: RingFeatures,
                resuming: RingPosition? = nil) {
        self.init(layout: layout, descriptors: ring + layout.descriptorOffset, driverArea: ring + layout.driverEventOffset,
                  deviceArea: ring + layout.deviceEventOffset, memory: deviceMemory, features: features, resuming: resuming)
    }

    /// AVAIL and USED of an available descriptor under `wrap`: AVAIL = wrap, USED = !wrap.
    @inlinable @inline(__always)
    static func availBits(_ wrap: Bool) -> UInt16 { wrap ? DescriptorFlags.avail : DescriptorFlags.used }

    /// Available: AVAIL equals the Driver Ring Wrap Counter and USED does not.
    @inlinable @inline(__always)
    static func isAvailable(_ flags: UInt16, wrap: Bool) -> Bool {
        (flags & DescriptorFlags.avail != 0) == wrap && (flags & DescriptorFlags.used != 0) != wrap
    }

    @inlinable @inline(__always)
    public mutating func popAvailable(into elements: UnsafeMutableBufferPointer<ChainElement>) throws(RingError) -> AvailableChain? {
        // Acquire: the rest of the chain is read only after the head flags that publish it.
        let headFlags = desc.loadAcquire16(at: Int(nextAvail) &* 16 &+ 14)
        guard headFlags & (DescriptorFlags.avail | DescriptorFlags.used) == availFlags else {
            if let v = violation { throw .broken(v) }
            return nil
        }
        var collector = ChainCollector(elements)
        var pos = nextAvail
        var wrap = availWrap
        var flags = headFlags
        var descriptors = 0
        var id: UInt16 = 0
        while true {
            descriptors &+= 1
            guard descriptors <= queueSize else { throw breakQueue(.chainTooLong(limit: queueSize)) }
            let d = desc + Int(pos) &* 16
            if descriptors > 1 {
                flags = d.loadLE(at: 14, as: UInt16.self)
                guard Self.isAvailable(flags, wrap: wrap) else {
                    throw breakQueue(.chainDescriptorNotAvailable(position: pos, flags: flags))
                }
            }
            let address = d.loadLE(at: 0, as: UInt64.self)
            let length = d.loadLE(at: 8, as: UInt32.self)
            id = d.loadLE(at: 12, as: UInt16.self)  // Buffer ID: the last descriptor's counts
            if flags & DescriptorFlags.indirect != 0 {
                guard features.indirect else { throw breakQueue(.indirectNotNegotiated(position: pos)) }
                guard descriptors == 1, flags & DescriptorFlags.next == 0 else {
                    throw breakQueue(.indirectInChain(position: pos))
                }
                if let v = collector.appendIndirect(table: address, length: length, memory: memory, split: false) {
                    throw breakQueue(v)
                }
            } else if let v = collector.append(address: address, length: length,
                                               writable: flags & DescriptorFlags.write != 0, position: pos) {
                throw breakQueue(v)
            }
            pos &+= 1
            if pos == size16 { pos = 0; wrap.toggle() }
            if flags & DescriptorFlags.next == 0 { break }
        }
        nextAvail = pos
        availWrap = wrap
        availFlags = Self.availBits(wrap)
        return collector.chain(id: id, ringDescriptors: UInt16(truncatingIfNeeded: descriptors))
    }

    @inlinable @inline(__always)
    public mutating func pushUsed(id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        pushUsedBatch(lastID: id, length: length, buffers: 1, ringDescriptors: ringDescriptors)
    }

    /// Packed in-order: one used descriptor with the last buffer's id, written over the
    /// first descriptor of the batch; the position skips every descriptor of the batch.
    @inlinable @inline(__always)
    public mutating func pushUsedBatch(lastID: UInt16, length: UInt32, buffers: UInt16, ringDescriptors: UInt16) {
        let d = desc + Int(nextUsed) &* 16
        d.storeLE(lastID, at: 12)
        d.storeLE(length, at: 8)
        var flags: UInt16 = usedWrap ? DescriptorFlags.avail | DescriptorFlags.used : 0
        if length > 0 { flags |= DescriptorFlags.write }
        // id and len must be visible before the flags that mark the descriptor used.
        d.storeRelease16(flags, at: 14)
        advanceUsed(by: ringDescriptors)
        usedSinceSignal &+= Int(ringDescriptors)
    }

    @inlinable
    public mutating func pushUsedBurst(ids: UnsafePointer<UInt16>, lengths: UnsafePointer<UInt32>,
                                       ringDescriptors: UnsafePointer<UInt16>, count: Int) {
        guard count > 0 else { return }
        let first = desc + Int(nextUsed) &* 16
        var firstFlags: UInt16 = 0
        var descriptors = 0
        for i in 0..<count {
            let d = desc + Int(nextUsed) &* 16
            d.storeLE(ids[i], at: 12)
            d.storeLE(lengths[i], at: 8)
            var flags: UInt16 = usedWrap ? DescriptorFlags.avail | DescriptorFlags.used : 0
            if lengths[i] > 0 { flags |= DescriptorFlags.write }
            // The driver reads used descriptors in ring order, so these become visible to it
            // through the first one's release store below.
            if i == 0 { firstFlags = flags } else { d.storeLE(flags, at: 14) }
            advanceUsed(by: ringDescriptors[i])
            descriptors &+= Int(ringDescriptors[i])
        }
        // Every id and len of the burst is visible before the flags that mark the first used.
        first.storeRelease16(firstFlags, at: 14)
        usedSinceSignal &+= descriptors
    }

    /// Writes a used descriptor with raw flags (the software device's fault injection).
    public mutating func pushRawUsed(id: UInt16, length: UInt32, flags: UInt16, advance: UInt16) {
        let d = desc + Int(nextUsed) &* 16
        d.storeLE(id, at: 12)
        d.storeLE(length, at: 8)
        d.storeRelease16(flags, at: 14)
        advanceUsed(by: advance)
    }

    /// Moves the used position past `descriptors`, toggling the Device Ring Wrap Counter at each pass of the end.
    @inlinable @inline(__always)
    mutating func advanceUsed(by descriptors: UInt16) {
        var pos = Int(nextUsed) &+ Int(descriptors)
        while pos >= queueSize { pos &-= queueSize; usedWrap.toggle() }
        nextUsed = UInt16(truncatingIfNeeded: pos)
    }

    @inlinable @inline(__always)
    public mutating func needsInterrupt() -> Bool {
        let added = usedSinceSignal
        usedSinceSignal = 0
        guard added > 0 else { return false }
        // Full barrier between marking descriptors used and reading the Driver Event Suppression.
        fullBarrier()
        return packedWantsEvent(driverEvent.loadRelaxed32(at: 0), eventIndex: features.eventIndex, added: added,
                                queueSize: queueSize, new: nextUsed, wrap: usedWrap)
    }

    public mutating func disableAvailNotifications() { packedDisableEvents(deviceEvent) }

    public mutating func enableAvailNotifications() -> Bool {
        packedEnableEvents(deviceEvent, eventIndex: features.eventIndex, position: nextAvail, wrap: availWrap)
        fullBarrier()
        return Self.isAvailable(desc.loadAcquire16(at: Int(nextAvail) &* 16 &+ 14), wrap: availWrap)
    }

    @usableFromInline
    mutating func breakQueue(_ v: RingViolation) -> RingError {
        violation = v
        availFlags = 0xFFFF  // the next pop takes the path that checks the violation
        return .broken(v)
    }

    public var position: RingPosition {
        RingPosition(packed: nextAvail, availWrap: availWrap, nextUsed: nextUsed, usedWrap: usedWrap)
    }
}
