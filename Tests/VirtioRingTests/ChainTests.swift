import Testing
import VirtioRing

@Suite("Chains, indirect tables, in-order")
struct ChainTests {
    @Test("chains of mixed length wrap the ring end", arguments: Layout.allCases)
    func chainsWrap(layout: Layout) throws {
        let size = layout == .packed ? 7 : 8
        let pair = try makePair(layout, size: size)
        let t = try Traffic(pair, seed: 11, checkOrder: false)
        // Offset the ring position by 5 so 3-descriptor chains straddle the end.
        for _ in 0..<5 { try t.add(readable: 1, writable: 0) }
        try t.devicePopAll(); t.deviceComplete(.inOrder); try t.driverReapAll()
        for _ in 0..<40 { try t.round(maxChain: size, mode: .outOfOrder) }
        t.expectDrained()
    }

    @Test("indirect tables carry long chains in one ring descriptor", arguments: Layout.allCases)
    func indirect(layout: Layout) throws {
        let pair = try makePair(layout, size: 16, features: RingFeatures(indirect: true), indirectMax: 8)
        let t = try Traffic(pair, seed: 5, checkOrder: false)
        try t.add(readable: 3, writable: 5)
        #expect(pair.freeDescriptors == 15, "an indirect buffer takes one ring descriptor")
        try t.devicePopAll()
        #expect(t.held.first?.chain.ringDescriptors == 1)
        #expect(t.held.first?.elements.count == 8)
        t.deviceComplete(.inOrder); try t.driverReapAll()
        for _ in 0..<50 { try t.round(maxChain: 8, mode: .outOfOrder) }
        t.expectDrained()
    }

    @Test("indirect tables in in-order mode", arguments: Layout.allCases)
    func indirectInOrder(layout: Layout) throws {
        let pair = try makePair(layout, size: 8, features: RingFeatures(indirect: true, inOrder: true), indirectMax: 4)
        let t = try Traffic(pair, seed: 9, checkOrder: true)
        for _ in 0..<60 { try t.round(maxChain: 4, mode: .inOrderBatches) }
        t.expectDrained()
    }

    @Test("in-order batches of 1- and 3-descriptor chains across the wrap", arguments: Layout.allCases, [5, 8, 16])
    func inOrderMixedBatches(layout: Layout, size: Int) throws {
        guard layout == .packed || size & (size - 1) == 0 else { return }
        let pair = try makePair(layout, size: size, features: RingFeatures(inOrder: true))
        let t = try Traffic(pair, seed: UInt64(size), checkOrder: true)
        for round in 0..<200 {
            // Alternate 1- and 3-descriptor buffers, so batches mix both and straddle the end.
            while pair.freeDescriptors >= 3 {
                try t.add(readable: 1, writable: round % 2 == 0 ? 2 : 0)
                if pair.freeDescriptors >= 1 { try t.add(readable: 0, writable: 1) }
            }
            try t.devicePopAll()
            t.deviceComplete(.inOrderBatches)
            try t.driverReapAll()
        }
        t.expectDrained()
    }

    @Test("out-of-order completion without in-order", arguments: Layout.allCases)
    func outOfOrder(layout: Layout) throws {
        let pair = try makePair(layout, size: 64)
        let t = try Traffic(pair, seed: 77, checkOrder: false)
        for _ in 0..<100 {
            try t.fill(maxChain: 4)
            try t.devicePopAll()
            t.deviceComplete(.outOfOrder, count: t.held.count / 2 + 1)  // leave some in the device
            try t.driverReapAll()
        }
        t.deviceComplete(.outOfOrder); try t.driverReapAll()
        t.expectDrained()
    }

    @Test("a full ring refuses a buffer and writes nothing", arguments: Layout.allCases)
    func fullRing(layout: Layout) throws {
        let pair = try makePair(layout, size: 4)
        let t = try Traffic(pair, seed: 1, checkOrder: false)
        try t.add(readable: 1, writable: 2)
        let before = Array(UnsafeRawBufferPointer(start: pair.ring, count: 4 * 16 + 64))
        #expect(throws: RingError.full) { _ = try pair.add(readable: [BufferElement(address: 0x1000, length: 1)],
                                                            writable: [BufferElement(address: 0x2000, length: 1)]) }
        #expect(Array(UnsafeRawBufferPointer(start: pair.ring, count: 4 * 16 + 64)) == before)
        #expect(try pair.pop() != nil)
        #expect(try pair.pop() == nil, "the refused buffer must not be visible to the device")
    }

    @Test("buffers the ring can never hold are refused", arguments: Layout.allCases)
    func oversizedBuffer(layout: Layout) throws {
        let pair = try makePair(layout, size: 4)
        let five = Array(repeating: BufferElement(address: 0x1000, length: 8), count: 5)
        #expect(throws: RingError.self) { _ = try pair.add(readable: five, writable: []) }
        #expect(throws: RingError.self) { _ = try pair.add(readable: [], writable: []) }
        let huge = [BufferElement(address: 0, length: .max), BufferElement(address: 0, length: .max)]
        #expect(throws: RingError.self) { _ = try pair.add(readable: huge, writable: []) }
        #expect(pair.freeDescriptors == 4)
    }
}
