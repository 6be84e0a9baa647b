import Testing
import VirtioRing

/// Driver MUST clauses of the digest (§d.1 packed, §d.2 split, §d.3 in-order), one named test each,
/// observed from the device side or from ring memory.
@Suite("Spec clauses")
struct SpecClauseTests {
    static func descriptor(_ ring: UnsafeMutableRawPointer, _ i: Int) -> (addr: UInt64, len: UInt32, word12: UInt16, word14: UInt16) {
        let d = ring + i * 16
        return (d.load(as: UInt64.self), d.load(fromByteOffset: 8, as: UInt32.self),
                d.load(fromByteOffset: 12, as: UInt16.self), d.load(fromByteOffset: 14, as: UInt16.self))
    }

    // MARK: d.1 packed

    @Test("d.1.1 packed: descriptor ring 16-aligned, event structures 4-aligned")
    func packedAlignment() throws {
        for n in packedSizes {
            let l = try PackedLayout(queueSize: n)
            #expect(l.descriptorOffset % 16 == 0 && l.driverEventOffset % 4 == 0 && l.deviceEventOffset % 4 == 0)
            #expect(l.totalSize == 16 * n + 8)
        }
    }

    @Test("d.1.2 packed: no descriptor changes after AVAIL until the device marks it used")
    func packedNoRewrite() throws {
        let pair = try makePair(.packed, size: 8)
        let t = try Traffic(pair, seed: 21, checkOrder: false)
        try t.add(readable: 1, writable: 2)  // slots 0...2
        let chain = Array(UnsafeRawBufferPointer(start: pair.ring, count: 48))
        while try t.add(readable: 1, writable: 0) {}  // the driver fills the rest of the ring
        #expect(try pair.poll() == nil)
        #expect(throws: RingError.full) { _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: []) }
        #expect(Array(UnsafeRawBufferPointer(start: pair.ring, count: 48)) == chain, "in-flight descriptors were rewritten")
        try t.devicePopAll(); t.deviceComplete(.outOfOrder); try t.driverReapAll()
        t.expectDrained()
    }

    @Test("d.1.3 packed: every descriptor of a chain carries the right AVAIL/USED/WRITE/NEXT; the head is written last")
    func packedChainFlags() throws {
        let pair = try makePair(.packed, size: 5)
        // Offset by 3 so the chain wraps: slots 3, 4 (lap 1) then 0, 1 (lap 2).
        for _ in 0..<3 { _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 4)], writable: []) }
        while let c = try pair.pop() { pair.pushUsed(id: c.chain.id, length: 0, ringDescriptors: c.chain.ringDescriptors) }
        while try pair.poll() != nil {}
        let id = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 4), BufferElement(address: 0x1_0000_1010, length: 4)],
                              writable: [BufferElement(address: 0x1_0000_2000, length: 8), BufferElement(address: 0x1_0000_2010, length: 8)])
        let avail = DescriptorFlags.avail, used = DescriptorFlags.used, next = DescriptorFlags.next, write = DescriptorFlags.write
        let expected: [(slot: Int, flags: UInt16)] = [(3, avail | next), (4, avail | next), (0, used | write | next), (1, used | write)]
        for (slot, flags) in expected {
            let d = Self.descriptor(pair.ring, slot)
            #expect(d.word14 == flags, "slot \(slot): flags 0x\(String(d.word14, radix: 16))")
            #expect(d.word12 == id, "Buffer ID in every descriptor (the device reads the last)")
        }
        let popped = try #require(try pair.pop())
        #expect(popped.chain.ringDescriptors == 4 && popped.elements.count == 4)
    }

    @Test("d.1.4/d.2.1 a chain is never longer than the queue", arguments: Layout.allCases)
    func chainLimit(layout: Layout) throws {
        let pair = try makePair(layout, size: 4)
        #expect(throws: RingError.invalidBuffer("5 elements exceed queue size 4")) {
            _ = try pair.add(readable: Array(repeating: BufferElement(address: 0, length: 1), count: 5), writable: [])
        }
    }

    @Test("d.1.5/d.2.2 device-writable elements come after the readable ones", arguments: Layout.allCases)
    func framingOrder(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)],
                         writable: [BufferElement(address: 0x1_0000_2000, length: 1), BufferElement(address: 0x1_0000_3000, length: 1)])
        let popped = try #require(try pair.pop())
        #expect(popped.elements.map(\.writable) == [false, true, true])
    }

    @Test("d.1.6 the whole chain fits before the head is exposed", arguments: Layout.allCases)
    func roomBeforeExpose(layout: Layout) throws {
        let pair = try makePair(layout, size: 4)
        _ = try pair.add(readable: Array(repeating: BufferElement(address: 0x1_0000_1000, length: 1), count: 2), writable: [])
        #expect(throws: RingError.full) {
            _ = try pair.add(readable: Array(repeating: BufferElement(address: 0x1_0000_1000, length: 1), count: 3), writable: [])
        }
        #expect(try pair.pop() != nil)
        #expect(try pair.pop() == nil)
    }

    @Test("d.1.7 INDIRECT only when negotiated; only WRITE inside a packed table", arguments: Layout.allCases)
    func indirectOnlyNegotiated(layout: Layout) throws {
        // A pool is offered but the feature is off: the driver must chain directly.
        let off = try makePair(layout, size: 8, features: RingFeatures(indirect: false), indirectMax: 4)
        _ = try off.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: [BufferElement(address: 0x1_0000_2000, length: 1)])
        #expect(try off.pop()?.chain.ringDescriptors == 2)
        let on = try makePair(layout, size: 8, features: RingFeatures(indirect: true), indirectMax: 4)
        _ = try on.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: [BufferElement(address: 0x1_0000_2000, length: 1)])
        let head = Self.descriptor(on.ring, 0)
        let flags = layout == .packed ? head.word14 : head.word12
        #expect(flags & DescriptorFlags.indirect != 0 && flags & DescriptorFlags.next == 0)
        let table = try #require(on.arena.pointer(at: head.addr, length: Int(head.len)))
        for k in 0..<2 {
            let e = Self.descriptor(table, k)
            if layout == .packed {
                #expect(e.word14 & ~DescriptorFlags.write == 0, "packed table entry flags")
            } else {
                #expect(e.word12 & DescriptorFlags.indirect == 0)
            }
        }
        #expect(try on.pop()?.elements.count == 2)
    }

    @Test("d.1.8 Buffer IDs are not reused while in flight; out-of-order returns free the right ids")
    func packedIDs() throws {
        let pair = try makePair(.packed, size: 16)
        let t = try Traffic(pair, seed: 81, checkOrder: false)
        for _ in 0..<300 {  // Traffic.add records an issue on any reuse of an in-flight id
            try t.fill(maxChain: 3)
            try t.devicePopAll()
            t.deviceComplete(.outOfOrder, count: max(1, t.held.count / 3))
            try t.driverReapAll()
        }
        t.deviceComplete(.outOfOrder); try t.driverReapAll()
        t.expectDrained()
    }

    @Test("d.1.9 packed wrap: the counter toggles exactly when passing N-1", arguments: [1, 3, 5, 256, 32768])
    func packedWrap(size: Int) throws {
        let pair = try makePair(.packed, size: size)
        for k in 1...(2 * size + 1) {
            _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: [])
            let p = pair.driverPosition
            #expect(Int(p.nextAvail) == k % size)
            #expect(p.availWrap == ((k / size) % 2 == 0))
            let c = try #require(try pair.pop())
            pair.pushUsed(id: c.chain.id, length: 0, ringDescriptors: 1)
            #expect(try pair.poll() != nil)
            if size > 1000 && k == 3 { break }  // the big ring: only the start, the sweep covers the rest
        }
    }

    @Test("d.1.10 packed: notify unless the device said DISABLE")
    func packedNotifyUnlessDisabled() throws {
        let pair = try makePair(.packed, size: 8)
        let flagsField = pair.ring + 8 * 16 + 4 + 2
        for (flags, notify) in [(PackedEventFlags.enable, true), (PackedEventFlags.disable, false), (UInt16(3), true)] {
            flagsField.storeBytes(of: flags, as: UInt16.self)
            _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: [])
            #expect(pair.driverNeedsNotification() == notify, "device flags \(flags)")
        }
    }

    @Test("d.1.11 packed: used length without WRITE: ignored for read-only buffers, taken (bounded) as QEMU and Linux do otherwise")
    func packedUsedLengthWithoutWrite() throws {
        // Read-only buffer: the reserved length is ignored. Writable buffer: QEMU 7.2 returns len with
        // WRITE clear in the used descriptor, so the driver takes it, still bounded by the writable part.
        for writable in [false, true] {
            let pair = try makePair(.packed, size: 8)
            let element = [BufferElement(address: 0x1_0000_2000, length: 64)]
            let id = try pair.add(readable: writable ? [] : element, writable: writable ? element : [])
            _ = try pair.pop()
            let d = pair.ring
            d.storeBytes(of: UInt32(40), toByteOffset: 8, as: UInt32.self)
            d.storeBytes(of: id, toByteOffset: 12, as: UInt16.self)
            d.storeBytes(of: DescriptorFlags.avail | DescriptorFlags.used, toByteOffset: 14, as: UInt16.self)
            #expect(try pair.poll() == UsedBuffer(token: id, length: writable ? 40 : 0))
        }
    }

    @Test("d.1.12 packed: DESC event mode only with EVENT_IDX")
    func packedDescOnlyWithEventIdx() throws {
        let pair = try makePair(.packed, size: 8, features: RingFeatures(eventIndex: false))
        _ = pair.enableUsedNotifications()
        _ = pair.enableUsedNotificationsDelayed()
        #expect((pair.ring + 8 * 16).load(fromByteOffset: 2, as: UInt16.self) == PackedEventFlags.enable)
    }

    // MARK: d.2 split

    @Test("d.2.1 split: areas aligned 16/2/4")
    func splitAlignment() throws {
        for n in splitSizes {
            let l = try SplitLayout(queueSize: n)
            #expect(l.descriptorOffset % 16 == 0 && l.availOffset % 2 == 0 && l.usedOffset % 4 == 0)
            #expect(l.availRingSize == 6 + 2 * n && l.usedRingSize == 6 + 8 * n)
        }
    }

    @Test("d.2.2 split: never NEXT and INDIRECT together")
    func splitNoIndirectNext() throws {
        let pair = try makePair(.split, size: 8, features: RingFeatures(indirect: true), indirectMax: 4)
        for _ in 0..<6 {
            _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: [BufferElement(address: 0x1_0000_2000, length: 1)])
        }
        for i in 0..<6 {
            let flags = Self.descriptor(pair.ring, i).word12
            #expect(!(flags & DescriptorFlags.indirect != 0 && flags & DescriptorFlags.next != 0))
        }
    }

    @Test("d.2.3 split: avail idx never decreases and moves by one per buffer")
    func splitAvailMonotonic() throws {
        let pair = try makePair(.split, size: 4)
        let t = try Traffic(pair, seed: 23, checkOrder: false)
        let l = try SplitLayout(queueSize: 4)
        var last: UInt16 = 0
        for _ in 0..<100 {
            try t.fill(maxChain: 2, limit: 2)
            let idx = (pair.ring + l.availOffset).load(fromByteOffset: 2, as: UInt16.self)
            #expect(idx &- last <= 2 && idx &- last >= 1)
            last = idx
            try t.devicePopAll(); t.deviceComplete(.outOfOrder); try t.driverReapAll()
        }
    }

    @Test("d.2.4 split: avail.flags in {0,1} without EVENT_IDX, 0 with it; used.flags starts 0", arguments: [false, true])
    func splitAvailFlags(eventIndex: Bool) throws {
        let pair = try makePair(.split, size: 8, features: RingFeatures(eventIndex: eventIndex))
        let l = try SplitLayout(queueSize: 8)
        #expect((pair.ring + l.usedOffset).load(as: UInt16.self) == 0)
        pair.disableUsedNotifications()
        let flags = (pair.ring + l.availOffset).load(as: UInt16.self)
        #expect(flags == (eventIndex ? 0 : 1))
        _ = pair.enableUsedNotifications()
        #expect((pair.ring + l.availOffset).load(as: UInt16.self) == 0)
    }

    @Test("d.2.5 split: notify iff used.flags == 0 (no EVENT_IDX)")
    func splitNotifyFlags() throws {
        let pair = try makePair(.split, size: 8)
        let l = try SplitLayout(queueSize: 8)
        for (flags, notify) in [(UInt16(0), true), (SplitRingFlags.noNotify, false)] {
            (pair.ring + l.usedOffset).storeBytes(of: flags, as: UInt16.self)
            _ = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)], writable: [])
            #expect(pair.driverNeedsNotification() == notify)
        }
    }

    @Test("d.2.6 the driver reports exactly the used length", arguments: Layout.allCases)
    func usedLength(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        let id = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 8)],
                              writable: [BufferElement(address: 0x1_0000_2000, length: 100), BufferElement(address: 0x1_0000_3000, length: 28)])
        let c = try #require(try pair.pop())
        #expect(c.chain.writableLength == 128)
        pair.pushUsed(id: c.chain.id, length: 117, ringDescriptors: c.chain.ringDescriptors)
        #expect(try pair.poll() == UsedBuffer(token: id, length: 117))
    }

    @Test("d.2.7 split: queue size is a power of two")
    func splitPowerOfTwo() {
        for n in [3, 5, 6, 7, 100, 255, 1000, 32767] {
            #expect(throws: RingError.invalidQueueSize(n, packed: false)) { try SplitLayout(queueSize: n) }
        }
    }

    @Test("d.2.8 used-buffer processing does not stop while used idx != last seen (digest A22)", arguments: Layout.allCases)
    func keepPollingWhilePending(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        let t = try Traffic(pair, seed: 28, checkOrder: false)
        try t.fill(maxChain: 1, limit: 3); try t.devicePopAll()
        pair.disableUsedNotifications()
        t.deviceComplete(.inOrder, count: 2)
        // The corrected loop: enabling finds work, so the driver keeps polling instead of sleeping.
        var reaped = 0
        repeat {
            while try pair.poll() != nil { reaped += 1 }
        } while pair.enableUsedNotifications()
        #expect(reaped == 2)
    }

    // MARK: d.3 in-order

    @Test("d.3.1 split in-order: descriptors in table order, next = x+1 wrapping, indirect tables sequential")
    func splitInOrderOrder() throws {
        let pair = try makePair(.split, size: 4, features: RingFeatures(inOrder: true))
        let t = try Traffic(pair, seed: 31, checkOrder: true)
        try t.add(readable: 1, writable: 0)
        try t.add(readable: 2, writable: 0)
        try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
        let id = try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)],
                              writable: [BufferElement(address: 0x1_0000_2000, length: 1), BufferElement(address: 0x1_0000_3000, length: 1)])
        #expect(id == 3, "the next buffer starts right after the last one")
        #expect(Self.descriptor(pair.ring, 3).word14 == 0 && Self.descriptor(pair.ring, 0).word14 == 1, "next = x+1, 0 after N-1")
        let ind = try makePair(.split, size: 4, features: RingFeatures(indirect: true, inOrder: true), indirectMax: 4)
        _ = try ind.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)],
                        writable: [BufferElement(address: 0x1_0000_2000, length: 1), BufferElement(address: 0x1_0000_3000, length: 1)])
        let head = Self.descriptor(ind.ring, 0)
        let table = try #require(ind.arena.pointer(at: head.addr, length: Int(head.len)))
        #expect((0..<2).map { Self.descriptor(table, $0).word14 } == [1, 2])
    }

    @Test("d.3.2/d.3.3 one used entry retires a whole in-order batch, skipped buffers in full", arguments: Layout.allCases)
    func inOrderBatch(layout: Layout) throws {
        let pair = try makePair(layout, size: 8, features: RingFeatures(inOrder: true))
        var ids: [UInt16] = []
        ids.append(try pair.add(readable: [], writable: [BufferElement(address: 0x1_0000_1000, length: 10)]))
        ids.append(try pair.add(readable: [BufferElement(address: 0x1_0000_1000, length: 1)],
                                writable: [BufferElement(address: 0x1_0000_2000, length: 20), BufferElement(address: 0x1_0000_3000, length: 5)]))
        ids.append(try pair.add(readable: [], writable: [BufferElement(address: 0x1_0000_4000, length: 30)]))
        var descriptors = 0
        while let c = try pair.pop() { descriptors += Int(c.chain.ringDescriptors) }
        pair.pushBatch(lastID: ids[2], length: 7, buffers: 3, ringDescriptors: UInt16(descriptors))
        var got: [UsedBuffer] = []
        while let u = try pair.poll() { got.append(u) }
        #expect(got == [UsedBuffer(token: ids[0], length: 10), UsedBuffer(token: ids[1], length: 25), UsedBuffer(token: ids[2], length: 7)])
        #expect(pair.freeDescriptors == 8)
    }

    @Test("d.3.4 without in-order the driver assumes no order", arguments: Layout.allCases)
    func noOrderAssumed(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        var ids: [UInt16] = []
        for k in 0..<4 { ids.append(try pair.add(readable: [], writable: [BufferElement(address: 0x1_0000_1000, length: UInt32(10 + k))])) }
        var chains: [AvailableChain] = []
        while let c = try pair.pop() { chains.append(c.chain) }
        for c in chains.reversed() { pair.pushUsed(id: c.id, length: 9, ringDescriptors: c.ringDescriptors) }
        var got: [UInt16] = []
        while let u = try pair.poll() { got.append(u.token) }
        #expect(got == ids.reversed())
        #expect(pair.freeDescriptors == 8)
    }
}
