/// The driver side of a split virtqueue over ring memory the caller owns.
public struct SplitDriverQueue: ~Copyable, DriverRing {
    public let queueSize: Int
    public let features: RingFeatures
    @usableFromInline let mask: UInt16
    @usableFromInline let desc: UnsafeMutableRawPointer
    @usableFromInline let avail: UnsafeMutableRawPointer
    @usableFromInline let used: UnsafeMutableRawPointer
    @usableFromInline let usedEventOffset: Int
    @usableFromInline let availEventOffset: Int
    @usableFromInline let slots: UnsafeMutablePointer<SlotState>
    @usableFromInline let indirectTables: UnsafeMutableRawPointer?
    @usableFromInline let indirectBase: UInt64
    @usableFromInline let indirectMax: Int

    @usableFromInline var freeHead: UInt16 = 0
    @usableFromInline var numFree: Int
    /// Shadow of avail.idx (free-running).
    @usableFromInline var availIdx: UInt16 = 0
    /// avail.idx when the driver last decided about notifying.
    @usableFromInline var notifiedIdx: UInt16 = 0
    @usableFromInline var lastUsedIdx: UInt16 = 0
    /// Last used.idx read from the device; re-read only once everything up to it is reaped.
    @usableFromInline var usedIdxSeen: UInt16 = 0
    @usableFromInline var inFlight: Int = 0
    /// In-order: head of the oldest buffer in flight.
    @usableFromInline var oldest: UInt16 = 0
    /// In-order batch being retired: its last head and the used length the device gave it.
    @usableFromInline var batchPending = false
    @usableFromInline var batchEnd: UInt16 = 0
    @usableFromInline var batchLength: UInt32 = 0
    public private(set) var violation: RingViolation?

    /// Takes over zeroed-on-init ring memory laid out as `layout` describes.
    /// `indirect` supplies tables when VIRTIO_F_INDIRECT_DESC is negotiated.
    public init(layout: SplitLayout, descriptors: UnsafeMutableRawPointer, driverArea: UnsafeMutableRawPointer,
                deviceArea: UnsafeMutableRawPointer, features: RingFeatures, indirect: IndirectPool? = nil) {
        let n = layout.queueSize
        queueSize = n
        self.features = features
        mask = UInt16(truncatingIfNeeded: n - 1)
        desc = descriptors
        avail = driverArea
        used = deviceArea
        usedEventOffset = layout.usedEventOffset
        availEventOffset = layout.availEventOffset
        // Split: the driver MUST initialise used.flags to 0 (and owns the other fields too).
        descriptors.initializeMemory(as: UInt8.self, repeating: 0, count: layout.descriptorTableSize)
        driverArea.initializeMemory(as: UInt8.self, repeating: 0, count: layout.availRingSize)
        deviceArea.initializeMemory(as: UInt8.self, repeating: 0, count: layout.usedRingSize)
        slots = .allocate(capacity: n)
        for i in 0..<n {
            slots[i] = SlotState(next: UInt16(truncatingIfNeeded: (i + 1) & (n - 1)), count: 0, writable: 0)
        }
        numFree = n
        (indirectTables, indirectBase, indirectMax) = IndirectPool.tables(indirect, features: features)
    }

    /// Convenience over one contiguous block at `SplitLayout` offsets.
    public init(layout: SplitLayout, memory: UnsafeMutableRawPointer, features: RingFeatures, indirect: IndirectPool? = nil) {
        self.init(layout: layout, descriptors: memory + layout.descriptorOffset, driverArea: memory + layout.availOffset,
                  deviceArea: memory + layout.usedOffset, features: features, indirect: indirect)
    }

    deinit { slots.deallocate() }

    public var freeDescriptors: Int { numFree }
    public var buffersInFlight: Int { inFlight }

    // MARK: adding buffers

    @inlinable @inline(__always)
    func nextDescriptor(after i: UInt16) -> UInt16 {
        // In-order: descriptors are used in table order, wrapping (split-ring, VIRTIO_F_IN_ORDER).
        features.inOrder ? (i &+ 1) & mask : slots[Int(i)].next
    }

    @inlinable @inline(__always)
    func writeDescriptor(_ i: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let d = desc + Int(i) &* 16
        d.storeLE(address, at: 0)
        d.storeLE(length, at: 8)
        d.storeLE(flags, at: 12)
        d.storeLE(next, at: 14)
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
        let head = freeHead
        var last = head
        if indirect, let tables = indirectTables {
            let stride = indirectMax &* 16
            writeIndirectTable(tables + Int(head) &* stride, readable: readable, writable: writable, chained: true)
            writeDescriptor(head, address: indirectBase &+ UInt64(Int(head) &* stride), length: UInt32(total &* 16),
                            flags: DescriptorFlags.indirect, next: nextDescriptor(after: head))
        } else {
            var i = head
            for k in 0..<total {
                let isWritable = k >= readable.count
                let e = isWritable ? writable[k &- readable.count] : readable[k]
                let next = nextDescriptor(after: i)
                var flags: UInt16 = isWritable ? DescriptorFlags.write : 0
                if k &+ 1 < total { flags |= DescriptorFlags.next }
                writeDescriptor(i, address: e.address, length: e.length, flags: flags, next: next)
                last = i
                i = next
            }
        }
        return publish(head: head, next: nextDescriptor(after: last), descriptors: needed, writable: writableBytes)
    }

    @inlinable
    public mutating func add(_ element: BufferElement, deviceWritable: Bool, failure: inout RingError?) -> UInt16 {
        // A broken queue has no free descriptors (breakQueue), so the violation is read only on failure.
        guard numFree > 0 else { failure = violation.map { .broken($0) } ?? .full; return 0 }
        let head = freeHead
        let next = nextDescriptor(after: head)
        writeDescriptor(head, address: element.address, length: element.length,
                        flags: deviceWritable ? DescriptorFlags.write : 0, next: next)
        return publish(head: head, next: next, descriptors: 1, writable: deviceWritable ? element.length : 0)
    }

    /// Burst: one one-element buffer per element, published with a single avail-idx store.
    @inlinable
    public mutating func addBurst(_ elements: Span<BufferElement>, deviceWritable: Bool,
                                  tokens: UnsafeMutablePointer<UInt16>, failure: inout RingError?) -> Int {
        let n = min(elements.count, numFree)
        guard n > 0 else {
            if let v = violation { failure = .broken(v) }
            return 0
        }
        let flags = deviceWritable ? DescriptorFlags.write : 0
        var head = freeHead
        var idx = availIdx
        for k in 0..<n {
            let e = elements[k]
            let next = nextDescriptor(after: head)
            writeDescriptor(head, address: e.address, length: e.length, flags: flags, next: next)
            slots[Int(head)].count = 1
            slots[Int(head)].writable = deviceWritable ? e.length : 0
            avail.storeLE(head, at: 4 &+ Int(idx & mask) &* 2)
            tokens[k] = head
            idx &+= 1
            head = next
        }
        freeHead = head
        numFree &-= n
        inFlight &+= n
        availIdx = idx
        // Split "Updating idx": one write barrier before the one idx store makes every ring
        // entry and descriptor of the burst visible to a device that acquires idx.
        avail.storeRelease16(idx, at: 2)
        return n
    }

    @inlinable @inline(__always)
    mutating func publish(head: UInt16, next: UInt16, descriptors: Int, writable: UInt32) -> UInt16 {
        freeHead = next
        numFree &-= descriptors
        slots[Int(head)].count = UInt16(truncatingIfNeeded: descriptors)
        slots[Int(head)].writable = writable
        avail.storeLE(head, at: 4 &+ Int(availIdx & mask) &* 2)
        availIdx &+= 1
        // Split "Updating idx": a write barrier before the idx store, so the device
        // that acquires idx sees the ring entry and the descriptors.
        avail.storeRelease16(availIdx, at: 2)
        inFlight &+= 1
        return head
    }

    // MARK: notifications

    @inlinable @inline(__always)
    public mutating func needsNotification() -> Bool {
        let old = notifiedIdx
        let new = availIdx
        notifiedIdx = new
        guard old != new else { return false }
        // Split "Notifying The Device": full barrier between the idx store and reading
        // used.flags / avail_event, or a device that just went to sleep is missed.
        fullBarrier()
        return splitWantsEvent(used, eventOffset: availEventOffset, eventIndex: features.eventIndex,
                               flag: SplitRingFlags.noNotify, new: new, old: old)
    }

    /// Split: next_off/next_wrap are the 15 low bits and bit 15 of avail idx, so the
    /// upper half is the whole free-running idx.
    @inlinable
    public func notificationData(queueIndex: UInt16) -> UInt32 {
        UInt32(availIdx) << 16 | UInt32(queueIndex)
    }

    public mutating func disableUsedNotifications() {
        // With EVENT_IDX avail.flags MUST stay 0: used_event is parked half the index space away.
        splitSetEvents(avail, eventOffset: usedEventOffset, eventIndex: features.eventIndex, suppress: true,
                       index: lastUsedIdx, flag: SplitRingFlags.noInterrupt)
    }

    public mutating func enableUsedNotifications() -> Bool {
        splitSetEvents(avail, eventOffset: usedEventOffset, eventIndex: features.eventIndex, suppress: false,
                       index: lastUsedIdx, flag: SplitRingFlags.noInterrupt)
        // Full barrier, then re-check used idx: a buffer used before the device saw the
        // re-enable raises no notification ("Receiving Used Buffers", corrected per digest A22).
        fullBarrier()
        return batchPending || used.loadAcquire16(at: 2) != lastUsedIdx
    }

    public mutating func enableUsedNotificationsDelayed() -> Bool {
        guard features.eventIndex else { return enableUsedNotifications() }
        let bufs = UInt16(truncatingIfNeeded: inFlight * 3 / 4)
        avail.storeRelaxed16(lastUsedIdx &+ bufs, at: usedEventOffset)
        fullBarrier()
        return batchPending || used.loadAcquire16(at: 2) &- lastUsedIdx > bufs
    }

    // MARK: used buffers

    @inlinable @inline(__always)
    public mutating func takeUsed() -> UsedBuffer? {
        if batchPending { return retireBatchMember() }
        if lastUsedIdx == usedIdxSeen {
            // Read once per used-idx refresh, not per buffer: breakQueue rewinds usedIdxSeen to here.
            if violation != nil { return nil }
            // Acquire: used ring entries are read only after the idx that covers them.
            let idx = used.loadAcquire16(at: 2)
            if idx == lastUsedIdx { return nil }
            if Int(idx &- lastUsedIdx) > inFlight {
                _ = breakQueue(.usedIndexJump(from: lastUsedIdx, to: idx, inFlight: inFlight)); return nil
            }
            usedIdxSeen = idx
        }
        let entry = used + (4 &+ Int(lastUsedIdx & mask) &* 8)
        let id = entry.loadLE(at: 0, as: UInt32.self)
        let length = entry.loadLE(at: 4, as: UInt32.self)
        guard Int(id) < queueSize else { _ = breakQueue(.usedIDOutOfRange(id: id, queueSize: queueSize)); return nil }
        let head = UInt16(truncatingIfNeeded: id)
        let slot = slots[Int(head)]
        guard slot.count != 0 else { _ = breakQueue(.usedIDNotInFlight(id: id)); return nil }
        guard length <= slot.writable else {
            _ = breakQueue(.usedLengthExceedsWritable(id: head, length: length, writable: slot.writable)); return nil
        }
        if features.inOrder && head != oldest {
            return startBatch(endingAt: head, length: length)
        }
        lastUsedIdx &+= 1
        retire(head)
        return UsedBuffer(token: head, length: length)
    }

    @inlinable @inline(__always)
    mutating func retire(_ head: UInt16) {
        let count = slots[Int(head)].count
        slots[Int(head)].count = 0
        numFree &+= Int(count)
        inFlight &-= 1
        if features.inOrder {
            oldest = (head &+ count) & mask
        } else {
            var last = head
            var k: UInt16 = 1
            while k < count { last = slots[Int(last)].next; k &+= 1 }
            slots[Int(last)].next = freeHead
            freeHead = head
        }
    }

    /// In-order: one used entry names the last buffer of a batch; every buffer from the
    /// oldest up to it is used, the skipped ones in full (split "In-order use of descriptors").
    @usableFromInline
    mutating func startBatch(endingAt head: UInt16, length: UInt32) -> UsedBuffer? {
        var buffers = 1
        var h = oldest
        while h != head {
            h = (h &+ slots[Int(h)].count) & mask
            buffers += 1
            guard buffers <= inFlight else { _ = breakQueue(.usedIDNotInFlight(id: UInt32(head))); return nil }
        }
        let advance = Int(usedIdxSeen &- lastUsedIdx)
        guard buffers <= advance else {
            _ = breakQueue(.inOrderBatchExceedsUsedIndex(id: head, buffers: buffers, advance: advance)); return nil
        }
        lastUsedIdx &+= UInt16(truncatingIfNeeded: buffers)
        batchPending = true
        batchEnd = head
        batchLength = length
        return retireBatchMember()
    }

    @inlinable
    mutating func retireBatchMember() -> UsedBuffer {
        let head = oldest
        let length: UInt32
        if head == batchEnd {
            batchPending = false
            length = batchLength
        } else {
            length = slots[Int(head)].writable
        }
        retire(head)
        return UsedBuffer(token: head, length: length)
    }

    @usableFromInline
    mutating func breakQueue(_ v: RingViolation) -> RingError {
        violation = v
        // What keeps the checks off the per-buffer path: no descriptor is free to add, and the
        // next takeUsed re-reads used idx, where the violation is checked.
        numFree = 0
        usedIdxSeen = lastUsedIdx
        batchPending = false
        return .broken(v)
    }

    public var position: RingPosition {
        RingPosition(split: availIdx, nextUsed: lastUsedIdx)
    }

    /// What a stalled queue looks like from here (for a diagnostic line, never the hot path).
    public var notificationState: String {
        "split: avail idx \(availIdx), last used \(lastUsedIdx), used idx \(used.loadAcquire16(at: 2)), in flight \(inFlight), "
            + "used flags \(used.loadRelaxed16(at: 0)), avail_event \(used.loadRelaxed16(at: availEventOffset)), notified at \(notifiedIdx)"
    }
}
