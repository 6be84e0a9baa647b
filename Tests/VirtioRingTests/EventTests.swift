import Testing
import VirtioRing

@Suite("Event suppression and notifications")
struct EventTests {
    static let one = [BufferElement(address: 0x1_0000_8000, length: 16)]

    @Test("available-buffer notifications follow the device's flags", arguments: Layout.allCases)
    func deviceFlags(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        #expect(pair.driverNeedsNotification() == false, "nothing added, nothing to notify")
        _ = try pair.add(readable: Self.one, writable: [])
        #expect(pair.driverNeedsNotification(), "flags start enabled")
        pair.disableAvailNotifications()
        _ = try pair.add(readable: Self.one, writable: [])
        #expect(pair.driverNeedsNotification() == false)
        #expect(pair.enableAvailNotifications(), "buffers are already available: the device must look")
        _ = try pair.add(readable: Self.one, writable: [])
        #expect(pair.driverNeedsNotification())
    }

    @Test("used-buffer notifications follow the driver's flags", arguments: Layout.allCases)
    func driverFlags(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        let t = try Traffic(pair, seed: 3, checkOrder: false)
        try t.fill(maxChain: 1, limit: 4)
        try t.devicePopAll()
        t.deviceComplete(.inOrder, count: 1)
        #expect(pair.deviceNeedsInterrupt(), "interrupts start enabled")
        pair.disableUsedNotifications()
        t.deviceComplete(.inOrder, count: 1)
        #expect(pair.deviceNeedsInterrupt() == false)
        #expect(pair.enableUsedNotifications(), "used buffers are pending: the driver must poll (digest A22)")
        try t.driverReapAll()
        #expect(pair.enableUsedNotifications() == false)
        t.deviceComplete(.inOrder, count: 1)
        #expect(pair.deviceNeedsInterrupt())
    }

    /// Split with EVENT_IDX: the driver notifies exactly when avail idx passes avail_event,
    /// checked around the 16-bit wrap of the index.
    @Test("split event idx, across the 16-bit index wrap")
    func splitEventIndex() throws {
        let size = 8
        let pair = try makePair(.split, size: size, features: RingFeatures(eventIndex: true))
        let layout = try SplitLayout(queueSize: size)
        let availEvent = pair.ring + layout.usedOffset + 4 + 8 * size
        let t = try Traffic(pair, seed: 4, checkOrder: false)
        var idx: UInt16 = 0
        // Walk avail idx to 65500, then step over the wrap one buffer at a time.
        while idx < 65500 {
            try t.add(readable: 1, writable: 0); idx &+= 1
            try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
        }
        _ = pair.driverNeedsNotification()
        for _ in 0..<80 {
            let event = idx &+ UInt16.random(in: 0...2)
            availEvent.storeBytes(of: event, as: UInt16.self)
            let old = idx
            try t.add(readable: 1, writable: 0); idx &+= 1
            let expected = vringNeedEvent(event: event, new: idx, old: old)
            #expect(pair.driverNeedsNotification() == expected, "avail_event \(event), idx \(old)->\(idx)")
            #expect(expected == (event == old), "one buffer added: notify iff avail_event was the old idx")
            try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
        }
        #expect(idx < 65500, "the index wrapped")
    }

    @Test("vring_need_event arithmetic")
    func needEvent() {
        #expect(vringNeedEvent(event: 5, new: 6, old: 5))
        #expect(!vringNeedEvent(event: 6, new: 6, old: 5))
        #expect(vringNeedEvent(event: 0xffff, new: 1, old: 0xfffe), "across the wrap")
        #expect(!vringNeedEvent(event: 2, new: 1, old: 0xfffe))
    }

    /// Split with EVENT_IDX from the device side: used_event tells when to interrupt.
    @Test("split used_event and the delayed form")
    func splitUsedEvent() throws {
        let pair = try makePair(.split, size: 16, features: RingFeatures(eventIndex: true))
        let t = try Traffic(pair, seed: 8, checkOrder: false)
        try t.fill(maxChain: 1, limit: 8)
        try t.devicePopAll()
        #expect(pair.enableUsedNotificationsDelayed() == false, "nothing used yet")
        // 3/4 of 8 in flight: the device interrupts when used idx passes 6.
        var interruptsAt: [Int] = []
        for k in 1...8 {
            t.deviceComplete(.inOrder, count: 1)
            if pair.deviceNeedsInterrupt() { interruptsAt.append(k) }
        }
        #expect(interruptsAt == [7])
        try t.driverReapAll()
        pair.disableUsedNotifications()
        try t.fill(maxChain: 1, limit: 2); try t.devicePopAll(); t.deviceComplete(.inOrder)
        #expect(pair.deviceNeedsInterrupt() == false)
    }

    /// Packed with EVENT_IDX: DESC mode with off_wrap, including an event in the previous lap.
    @Test("packed descriptor event mode", arguments: [false, true])
    func packedDescMode(previousLap: Bool) throws {
        let size = 8
        let pair = try makePair(.packed, size: size, features: RingFeatures(eventIndex: true))
        let deviceEvent = pair.ring + size * 16 + 4
        let t = try Traffic(pair, seed: 2, checkOrder: false)
        // Move to position 6 of the first lap.
        for _ in 0..<6 { try t.add(readable: 1, writable: 0) }
        try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
        _ = pair.driverNeedsNotification()
        // Ask for a notification at offset 7 of lap 1 (wrap bit 1), or offset 1 of lap 2 (wrap 0).
        let offWrap: UInt16 = previousLap ? 7 | 0x8000 : 1
        deviceEvent.storeBytes(of: offWrap, as: UInt16.self)
        deviceEvent.storeBytes(of: PackedEventFlags.desc, toByteOffset: 2, as: UInt16.self)
        var decisions: [Bool] = []
        for _ in 0..<4 {  // positions 6, 7, 0 (wrap), 1
            try t.add(readable: 1, writable: 0)
            decisions.append(pair.driverNeedsNotification())
        }
        #expect(decisions == (previousLap ? [false, true, false, false] : [false, false, false, true]))
        #expect(pair.driverPosition.availWrap == false, "the driver wrap counter toggled at the end")
    }

    /// A device whose DESC event offset lies behind buffers it already used (QEMU 7.2's packed
    /// virtio-net transmit queue, seen in tools/qemu-test: off_wrap 195 after it had used through
    /// 244 of the same lap, the ring full, the device idle) is notified anyway; a sane one is not.
    @Test("packed: a stale event offset still gets a notification", arguments: [false, true])
    func packedStaleEvent(stale: Bool) throws {
        let size = 8
        let pair = try makePair(.packed, size: size, features: RingFeatures(eventIndex: true))
        let deviceEvent = pair.ring + size * 16 + 4
        let t = try Traffic(pair, seed: 5, checkOrder: false)
        // Six buffers used back: next used is 6 of lap 1 (wrap 1).
        for _ in 0..<6 { try t.add(readable: 1, writable: 0) }
        try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
        _ = pair.driverNeedsNotification()
        // Offset 2 of lap 1 is behind next used (stale); offset 2 of lap 2 (wrap 0) lies ahead.
        deviceEvent.storeBytes(of: stale ? 2 | 0x8000 : 2, as: UInt16.self)
        deviceEvent.storeBytes(of: PackedEventFlags.desc, toByteOffset: 2, as: UInt16.self)
        try t.add(readable: 1, writable: 0)
        #expect(pair.driverNeedsNotification() == stale)
    }

    @Test("packed: the driver uses DESC mode only with EVENT_IDX", arguments: [false, true])
    func packedDriverEventMode(eventIndex: Bool) throws {
        let pair = try makePair(.packed, size: 8, features: RingFeatures(eventIndex: eventIndex))
        _ = pair.enableUsedNotifications()
        let flags = (pair.ring + 8 * 16).load(fromByteOffset: 2, as: UInt16.self)
        #expect(flags == (eventIndex ? PackedEventFlags.desc : PackedEventFlags.enable))
        pair.disableUsedNotifications()
        #expect((pair.ring + 8 * 16).load(fromByteOffset: 2, as: UInt16.self) == PackedEventFlags.disable)
    }

    /// The delayed re-enable re-checks the driver's next used position, not the event position:
    /// 6 two-descriptor chains in a 16-entry ring put the event at 12 * 3/4 = 9, the second
    /// descriptor of chain 5, which the device never writes. The device completed everything
    /// before the call, so the call must say work is pending (it said false before the fix).
    @Test("packed delayed re-enable sees buffers used before the call", arguments: [false, true])
    func packedDelayedRecheck(inOrder: Bool) throws {
        let pair = try makePair(.packed, size: 16, features: RingFeatures(eventIndex: true, inOrder: inOrder))
        let t = try Traffic(pair, seed: 9, checkOrder: false)
        for _ in 0..<6 { #expect(try t.add(readable: 1, writable: 1)) }
        try t.devicePopAll()
        t.deviceComplete(inOrder ? .inOrderBatches : .inOrder)
        pair.disableUsedNotifications()
        #expect(pair.enableUsedNotificationsDelayed() == true, "all six are used; the driver must poll, not sleep")
        let offWrap = (pair.ring + 16 * 16).load(as: UInt16.self)
        #expect(offWrap == 9 | 0x8000, "the event still asks for 3/4 of the in-flight descriptors")
        try t.driverReapAll()
        #expect(pair.inFlight == 0)
        #expect(pair.enableUsedNotificationsDelayed() == false, "nothing left in flight or used")
    }

    /// In-order: once the driver took the first buffer of a batch, the rest of it is pending work
    /// even though no descriptor at the next used position says so.
    @Test("packed delayed re-enable counts a pending in-order batch")
    func packedDelayedPendingBatch() throws {
        let pair = try makePair(.packed, size: 16, features: RingFeatures(eventIndex: true, inOrder: true))
        for i in 0..<4 { _ = try pair.addOne(BufferElement(address: UInt64(0x10000 + i * 512), length: 512), writable: false) }
        while try pair.pop() != nil {}
        pair.pushBatch(lastID: 3, length: 0, buffers: 4, ringDescriptors: 4)  // one used descriptor for all four
        #expect(try pair.poll()?.token == 0)
        #expect(pair.enableUsedNotificationsDelayed() == true, "three buffers of the batch are still to be taken")
    }

    @Test("packed: the device interrupts at the driver's off_wrap")
    func packedDeviceDecision() throws {
        let pair = try makePair(.packed, size: 8, features: RingFeatures(eventIndex: true))
        let t = try Traffic(pair, seed: 6, checkOrder: false)
        try t.fill(maxChain: 1, limit: 6)
        try t.devicePopAll()
        #expect(pair.enableUsedNotificationsDelayed() == false)  // event at 0 + 6*3/4 = 4
        var interruptsAt: [Int] = []
        for k in 1...6 {
            t.deviceComplete(.inOrder, count: 1)
            if pair.deviceNeedsInterrupt() { interruptsAt.append(k) }
        }
        #expect(interruptsAt == [5])
    }

    @Test("notification data value (feature 38)", arguments: Layout.allCases)
    func notificationData(layout: Layout) throws {
        let size = 4
        let pair = try makePair(layout, size: size)
        let t = try Traffic(pair, seed: 12, checkOrder: false)
        for step in 1...11 {
            try t.add(readable: 1, writable: 0)
            try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
            let data = pair.notificationData(queueIndex: 3)
            #expect(data & 0xffff == 3)
            let expected: UInt32 = layout == .split
                ? UInt32(step)  // the free-running avail idx
                : UInt32(step % size) | (((step / size) % 2 == 0) ? 0x8000 : 0)  // offset + driver wrap counter
            #expect(data >> 16 == expected, "after \(step) buffers")
        }
    }
}
