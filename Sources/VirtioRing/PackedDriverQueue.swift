/// The driver side of a packed virtqueue over ring memory the caller owns.
public struct PackedDriverQueue: ~Copyable, DriverRing {
    public let queueSize: Int
    public let features: RingFeatures
    @usableFromInline let size16: UInt16
    @usableFromInline let desc: UnsafeMutableRawPointer
    /// Driver Event Suppression: written by us, read by the device (used-buffer notifications).
    @usableFromInline let driverEvent: UnsafeMutableRawPointer
    /// Device Event Suppression: written by the device, read by us (available-buffer notifications).
    @usableFromInline let deviceEvent: UnsafeMutableRawPointer
    /// Indexed by buffer id.
    @usableFromInline let slots: UnsafeMutablePointer<SlotState>
    @usableFromInline let indirectTables: UnsafeMutableRawPointer?
    @usableFromInline let indirectBase: UInt64
    @usableFromInline let indirectMax: Int

    @usableFromInline var nextAvail: UInt16 = 0
    /// Driver Ring Wrap Counter, starts at 1.
    @usableFromInline var availWrap = true
    @usableFromInline var nextUsed: UInt16 = 0
    /// The Device Ring Wrap Counter as the driver tracks it, starts at 1.
    @usableFromInline var usedWrap = true
    /// AVAIL and USED as a used descriptor at nextUsed has them (both = usedWrap); 0xFFFF, which
    /// no flags match, once the queue is broken, so takeUsed's one compare also catches that.
    @usableFromInline var usedFlags: UInt16 = DescriptorFlags.avail | DescriptorFlags.used
    @usableFromInline var numFree: Int
    /// Head of the free buffer-id list (not used in-order, where id = head position).
    @usableFromInline var freeID: UInt16 = 0
    @usableFromInline var inFlight: Int = 0
    /// Descriptors made available since the last notification decision.
    @usableFromInline var addedSinceNotify: Int = 0
    @usableFromInline var batchPending = false
    @usableFromInline var batchEnd: UInt16 = 0
    @usableFromInline var batchLength: UInt32 = 0
    public private(set) var violation: RingViolation?

    /// Takes over ring memory laid out as `layout` describes and zeroes it.
    public init(layout: PackedLayout, descriptors: UnsafeMutableRawPointer, driverArea: UnsafeMutableRawPointer,
                deviceArea: UnsafeMutableRawPointer, features: RingFeatures, indirect: IndirectPool? = nil) {
        let n = layout.queueSize
        queueSize = n
        size16 = UInt16(truncatingIfNeeded: n)
        self.features = features
        desc = descriptors
        driverEvent = driverArea
        deviceEvent = deviceArea
        // Packed: descriptors start zeroed, so AVAIL == USED == 0 means "not available" under wrap 1.
        descriptors.initializeMemory(as: UInt8.self, repeating: 0, count: layout.descriptorRingSize)
        driverArea.initializeMemory(as: UInt8.self, repeating: 0, count: PackedLayout.eventSuppressionSize)
        deviceArea.initializeMemory(as: UInt8.self, repeating: 0, count: PackedLayout.eventSuppressionSize)
        slots = .allocate(capacity: n)
        for i in 0..<n {
            slots[i] = SlotState(next: UInt16(truncatingIfNeeded: i + 1 == n ? 0 : i + 1), count: 0, writable: 0)
        }
        numFree = n
        (indirectTables, indirectBase, indirectMax) = IndirectPool.tables(indirect, features: features)
    }

    /// Convenience over one contiguous block at `PackedLayout` offsets.
    public init(layout: PackedLayout, memory: UnsafeMutableRawPointer, features: RingFeatures, indirect: IndirectPool? = nil) {
        self.init(layout: layout, descriptors: memory + layout.descriptorOffset, driverArea: memory + layout.driverEventOffset,
                  deviceArea: memory + layout.deviceEventOffset, features: features, indirect: indirect)
    }

    deinit { slots.deallocate() }

    public var freeDescriptors: Int { numFree }
    public var buffersInFlight: Int { inFlight }

    // MARK: adding buffers

    @inlinable @inline(__always)
    func writeDescriptor(_ pos: UInt16, address: UInt64, length: UInt32, id: UInt16) {
        let d = desc + Int(pos) &* 16
        d.storeLE(address, at: 0)
        d.storeLE(length, at: 8)
        d.storeLE(id, at: 12)
    }

    /// AVAIL set to the Driver Ring Wrap Counter and USED to its inverse.
    @inlinable @inline(__always)
    static func availBits(_ wrap: Bool) -> UInt16 {
        wrap ? DescriptorFlags.avail : DescriptorFlags.used
    }

    @inlinable @inline(__always)
    mutating func takeID() -> UInt16 {
        if features.inOrder { return nextAvail }
        let id = freeID
        freeID = slots[Int(id)].next
        return id
    }

    public mutating func add(readable: Span<BufferElement>, writable: Span<BufferElement>, failure: inout RingError?) -> UInt16 {
        if let v = violation { failure = .broken(v); return 0 }
        let writableBytes: UInt32
        do { writableBytes = try measureBuffer(readable: readable, writable: writable) } catch { failure = error; return 0 }
        let total = readable.count + writable.count
        let indirect = indirectMax != 0 && total > 1 && total <= indirectMax
        guard indirect || total <= queueSize else {
            failure = .invalidBuffer("\(total) elements exceed queue size \(queueSize)"); return 0
        }
        let needed = indirect ? 1 : total
        guard numFree >= needed else { failure = .full; return 0 }
        let id = takeID()
        let head = nextAvail
        let headFlags: UInt16
        var pos = head
        var wrap = availWrap
        if indirect, let tables = indirectTables {
            let stride = indirectMax &* 16
            writeIndirectTable(tables + Int(id) &* stride, readable: readable, writable: writable, chained: false)
            writeDescriptor(pos, address: indirectBase &+ UInt64(Int(id) &* stride), length: UInt32(total &* 16), id: id)
            headFlags = DescriptorFlags.indirect | Self.availBits(wrap)
            pos &+= 1
            if pos == size16 { pos = 0; wrap.toggle() }
        } else {
            var flagsOfHead: UInt16 = 0
            for k in 0..<total {
                let isWritable = k >= readable.count
                let e = isWritable ? writable[k &- readable.count] : readable[k]
                // Buffer ID in every descriptor (the device reads the last; digest A3).
                writeDescriptor(pos, address: e.address, length: e.length, id: id)
                var flags = Self.availBits(wrap)
                if isWritable { flags |= DescriptorFlags.write }
                if k &+ 1 < total { flags |= DescriptorFlags.next }
                if k == 0 {
                    flagsOfHead = flags
                } else {
                    // Ordered before the device can look by the head's release store below.
                    desc.storeLE(flags, at: Int(pos) &* 16 &+ 14)
                }
                pos &+= 1
                if pos == size16 { pos = 0; wrap.toggle() }
            }
            headFlags = flagsOfHead
        }
        return publish(id: id, head: head, headFlags: headFlags, next: pos, wrap: wrap, descriptors: needed, writable: writableBytes)
    }

    @inlinable
    public mutating func add(_ element: BufferElement, deviceWritable: Bool, failure: inout RingError?) -> UInt16 {
        // A broken queue has no free descriptors (breakQueue), so the violation is read only on failure.
        guard numFree > 0 else { failure = violation.map { .broken($0) } ?? .full; return 0 }
        let id = takeID()
        let head = nextAvail
        writeDescriptor(head, address: element.address, length: element.length, id: id)
        var next = head &+ 1
        var wrap = availWrap
        if next == size16 { next = 0; wrap.toggle() }
        let flags = Self.availBits(availWrap) | (deviceWritable ? DescriptorFlags.write : 0)
        return publish(id: id, head: head, headFlags: flags, next: next, wrap: wrap, descriptors: 1,
                       writable: deviceWritable ? element.length : 0)
    }

    /// Burst: one one-element buffer per element; the first descriptor's flags are written last.
    @inlinable
    public mutating func addBurst(_ elements: Span<BufferElement>, deviceWritable: Bool,
                                  tokens: UnsafeMutablePointer<UInt16>, failure: inout RingError?) -> Int {
        let n = min(elements.count, numFree)
        guard n > 0 else {
            if let v = violation { failure = .broken(v) }
            return 0
        }
        let write = deviceWritable ? DescriptorFlags.write : 0
        let head = nextAvail
        let headWrap = availWrap
        var pos = head
        var wrap = headWrap
        for k in 0..<n {
            let e = elements[k]
            let id: UInt16
            if features.inOrder {
                id = pos
            } else {
                id = freeID
                freeID = slots[Int(id)].next
            }
            writeDescriptor(pos, address: e.address, length: e.length, id: id)
            slots[Int(id)].count = 1
            slots[Int(id)].writable = deviceWritable ? e.length : 0
            tokens[k] = id
            // Ordered before the device can look by the first's release store below: a device
            // takes buffers in ring order, so it reads these only after it has seen the first.
            if k > 0 { desc.storeLE(Self.availBits(wrap) | write, at: Int(pos) &* 16 &+ 14) }
            pos &+= 1
            if pos == size16 { pos = 0; wrap.toggle() }
        }
        nextAvail = pos
        availWrap = wrap
        numFree &-= n
        addedSinceNotify &+= n
        inFlight &+= n
        // Packed "Making Buffers Available" with batching: the first buffer's flags last,
        // after a write barrier, so every descriptor of the burst is visible first.
        desc.storeRelease16(Self.availBits(headWrap) | write, at: Int(head) &* 16 &+ 14)
        return n
    }

    @inlinable @inline(__always)
    mutating func publish(id: UInt16, head: UInt16, headFlags: UInt16, next: UInt16, wrap: Bool,
                          descriptors: Int, writable: UInt32) -> UInt16 {
        slots[Int(id)].count = UInt16(truncatingIfNeeded: descriptors)
        slots[Int(id)].writable = writable
        nextAvail = next
        availWrap = wrap
        numFree &-= descriptors
        addedSinceNotify &+= descriptors
        inFlight &+= 1
        // Packed "Driver Requirements: Scatter-Gather Support": the head's flags are
        // written last, after a write barrier, so the whole chain is visible first.
        desc.storeRelease16(headFlags, at: Int(head) &* 16 &+ 14)
        return id
    }

    // MARK: notifications

    @inlinable @inline(__always)
    public mutating func needsNotification() -> Bool {
        let added = addedSinceNotify
        addedSinceNotify = 0
        guard added > 0 else { return false }
        // Packed "Notifying The Device": full barrier between making descriptors
        // available and reading the Device Event Suppression structure.
        fullBarrier()
        let snapshot = deviceEvent.loadRelaxed32(at: 0)
        if packedWantsEvent(snapshot, eventIndex: features.eventIndex, added: added, queueSize: queueSize,
                            new: nextAvail, wrap: availWrap) { return true }
        // A device that asks (DESC) to hear of a descriptor it has already used back to us can only
        // be waiting on a stale event offset, and would wait forever: notify anyway (spurious
        // notifications are always allowed). Seen with QEMU 7.2's packed virtio-net transmit queue:
        // off_wrap 195 in the lap it had already used through 244, all 256 buffers with it, idle.
        return features.eventIndex && packedEventIsStale(snapshot)
    }

    /// The device's event offset lies behind the next descriptor we expect it to use back.
    @inlinable
    func packedEventIsStale(_ snapshot: UInt32) -> Bool {
        guard UInt16(truncatingIfNeeded: snapshot >> 16) & 0x3 == PackedEventFlags.desc, inFlight > 0 else { return false }
        let offWrap = UInt16(truncatingIfNeeded: snapshot)
        // Position and wrap counter as one count modulo two laps (wrap 1 first, then wrap 0). A sane
        // event lies at most one lap ahead of the next used descriptor; further ahead means behind it.
        let n = queueSize
        func k(_ pos: UInt16, _ wrap: Bool) -> Int { Int(pos) + (wrap ? 0 : n) }
        var ahead = k(offWrap & 0x7fff, offWrap & 0x8000 != 0) &- k(nextUsed, usedWrap)
        if ahead < 0 { ahead &+= 2 &* n }
        return ahead > n
    }

    /// Packed: next_off is the offset of the next descriptor to make available, next_wrap the Driver Ring Wrap Counter.
    @inlinable
    public func notificationData(queueIndex: UInt16) -> UInt32 {
        UInt32(nextAvail & 0x7fff | (availWrap ? 0x8000 : 0)) << 16 | UInt32(queueIndex)
    }

    public mutating func disableUsedNotifications() { packedDisableEvents(driverEvent) }

    public mutating func enableUsedNotifications() -> Bool {
        packedEnableEvents(driverEvent, eventIndex: features.eventIndex, position: nextUsed, wrap: usedWrap)
        // Full barrier, then re-check: a buffer used before the device saw the flags raised no notification.
        fullBarrier()
        return batchPending || isUsed(at: nextUsed, wrap: usedWrap)
    }

    public mutating func enableUsedNotificationsDelayed() -> Bool {
        guard features.eventIndex else { return enableUsedNotifications() }
        // Linux virtqueue_enable_cb_delayed_packed: event 3/4 of the in-flight descriptors ahead.
        var pos = Int(nextUsed) + (queueSize - numFree) * 3 / 4
        var wrap = usedWrap
        if pos >= queueSize { pos -= queueSize; wrap.toggle() }
        driverEvent.storeRelaxed16(UInt16(pos) | (wrap ? 0x8000 : 0), at: 0)
        // off_wrap before the flags that make the device read it ("Driver Notification Suppression").
        driverEvent.storeRelease16(PackedEventFlags.desc, at: 2)
        // Full barrier, then re-check at the driver's next used position, as Linux does since
        // "virtio_ring: fix stalls for packed rings" (2019): the event position may be inside a
        // chain or an in-order batch, which the device never writes, so a device that passed it
        // before it saw the event would never notify. A pending in-order batch is work too.
        fullBarrier()
        return batchPending || isUsed(at: nextUsed, wrap: usedWrap)
    }

    @inlinable
    func isUsed(at pos: UInt16, wrap: Bool) -> Bool {
        let flags = desc.loadAcquire16(at: Int(pos) &* 16 &+ 14)
        let bits = wrap ? DescriptorFlags.avail | DescriptorFlags.used : 0
        return flags & (DescriptorFlags.avail | DescriptorFlags.used) == bits
    }

    // MARK: used buffers

    @inlinable @inline(__always)
    public mutating func takeUsed() -> UsedBuffer? {
        if batchPending { return retireBatchMember() }
        if inFlight == 0 { return nil }
        let off = Int(nextUsed) &* 16
        // Acquire: id and len are read only after the flags that say the descriptor is used.
        let flags = desc.loadAcquire16(at: off &+ 14)
        if flags & (DescriptorFlags.avail | DescriptorFlags.used) != usedFlags {
            if violation != nil { return nil }
            let availBit = flags & DescriptorFlags.avail != 0
            let usedBit = flags & DescriptorFlags.used != 0
            // Still as the driver wrote it (AVAIL = wrap, USED = !wrap): not used yet.
            if availBit == usedWrap && usedBit != usedWrap { return nil }
            _ = breakQueue(.inconsistentAvailUsedBits(position: nextUsed, flags: flags, wrap: usedWrap)); return nil
        }
        let id = desc.loadLE(at: off &+ 12, as: UInt16.self)
        guard Int(id) < queueSize else { _ = breakQueue(.usedIDOutOfRange(id: UInt32(id), queueSize: queueSize)); return nil }
        let slot = slots[Int(id)]
        guard slot.count != 0 else { _ = breakQueue(.usedIDNotInFlight(id: UInt32(id))); return nil }
        // The spec reserves the used length when WRITE is clear in the used descriptor, but QEMU
        // (7.2) never sets WRITE there and Linux and DPDK read the length regardless: read it
        // whenever the buffer has a writable part, and still bound it by that part.
        let length = flags & DescriptorFlags.write != 0 || slot.writable != 0
            ? desc.loadLE(at: off &+ 8, as: UInt32.self) : 0
        guard length <= slot.writable else {
            _ = breakQueue(.usedLengthExceedsWritable(id: id, length: length, writable: slot.writable)); return nil
        }
        if features.inOrder && id != nextUsed {
            return startBatch(endingAt: id, length: length)
        }
        retire(id)
        return UsedBuffer(token: id, length: length)
    }

    @inlinable @inline(__always)
    mutating func retire(_ id: UInt16) {
        let count = slots[Int(id)].count
        slots[Int(id)].count = 0
        // The device skips as many descriptors as the buffer used (packed "Used descriptors").
        var pos = nextUsed &+ count
        if pos >= size16 {
            pos &-= size16
            usedWrap.toggle()
            usedFlags ^= DescriptorFlags.avail | DescriptorFlags.used
        }
        nextUsed = pos
        numFree &+= Int(count)
        inFlight &-= 1
        if !features.inOrder {
            slots[Int(id)].next = freeID
            freeID = id
        }
    }

    /// In-order: the used descriptor names the last buffer of a batch, written over the
    /// first; the driver retires every buffer up to it, the skipped ones in full.
    @usableFromInline
    mutating func startBatch(endingAt id: UInt16, length: UInt32) -> UsedBuffer? {
        var buffers = 1
        var h = nextUsed
        while h != id {
            h &+= slots[Int(h)].count
            if h >= size16 { h &-= size16 }
            buffers += 1
            guard buffers <= inFlight else { _ = breakQueue(.usedIDNotInFlight(id: UInt32(id))); return nil }
        }
        batchPending = true
        batchEnd = id
        batchLength = length
        return retireBatchMember()
    }

    @inlinable
    mutating func retireBatchMember() -> UsedBuffer {
        let id = nextUsed  // in-order: buffer id = head position
        let length: UInt32
        if id == batchEnd {
            batchPending = false
            length = batchLength
        } else {
            length = slots[Int(id)].writable
        }
        retire(id)
        return UsedBuffer(token: id, length: length)
    }

    @usableFromInline
    mutating func breakQueue(_ v: RingViolation) -> RingError {
        violation = v
        // What keeps the checks off the per-buffer path: nothing is free to add, no flags match.
        numFree = 0
        usedFlags = 0xFFFF
        batchPending = false
        return .broken(v)
    }

    public var position: RingPosition {
        RingPosition(packed: nextAvail, availWrap: availWrap, nextUsed: nextUsed, usedWrap: usedWrap)
    }

    /// What a stalled queue looks like from here (for a diagnostic line, never the hot path).
    public var notificationState: String {
        let ev = deviceEvent.loadRelaxed32(at: 0), dr = driverEvent.loadRelaxed32(at: 0)
        func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
        return "packed: next avail \(nextAvail) wrap \(availWrap), next used \(nextUsed) wrap \(usedWrap), in flight \(inFlight), "
            + "device event off_wrap \(hex(ev & 0xffff)) flags \(ev >> 16), driver event off_wrap \(hex(dr & 0xffff)) flags \(dr >> 16), "
            + "desc flags at next used \(hex(UInt32(desc.loadRelaxed16(at: Int(nextUsed) &* 16 &+ 14)))), "
            + "at next avail \(hex(UInt32(desc.loadRelaxed16(at: Int(nextAvail) &* 16 &+ 14)))), added since notify \(addedSinceNotify)"
    }
}
