import Testing
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// The burst API (add N with one publishing store, poll up to N) writes the same ring bytes as
/// N single adds, stops at a full ring without failing, and keeps the broken-queue rules.
@Suite("Burst add and poll")
struct BurstTests {
    static let configurations: [(Layout, Bool)] = [(.split, false), (.split, true), (.packed, false), (.packed, true)]

    static func ringBytes(_ layout: Layout, _ size: Int) throws -> Int {
        layout == .split ? try SplitLayout(queueSize: size).totalSize : try PackedLayout(queueSize: size).totalSize
    }

    static func elements(_ count: Int, from k: Int) -> [BufferElement] {
        (0..<count).map { BufferElement(address: 0x1_0000_0000 + UInt64(k + $0) * 256, length: UInt32(64 + (k + $0) % 7)) }
    }

    /// Twin rings, one fed by bursts and one by single adds of the same elements, through
    /// several wraps with buffers returned in between: same tokens, same ring memory, same chains.
    @Test(arguments: configurations)
    func burstEqualsSingleAdds(layout: Layout, inOrder: Bool) throws {
        let size = 8
        let features = RingFeatures(inOrder: inOrder)
        let burst = try makePair(layout, size: size, features: features)
        let single = try makePair(layout, size: size, features: features)
        let bytes = try Self.ringBytes(layout, size)
        var next = 0
        for (round, count) in [5, 3, 6, 8, 1, 7, 4, 8, 2].enumerated() {
            let writable = round % 2 == 0
            let room = burst.freeDescriptors
            let e = Self.elements(count, from: next)
            let tokens = try burst.addBurst(e, writable: writable)
            var expected: [UInt16] = []
            for x in e.prefix(room) { expected.append(try single.addOne(x, writable: writable)) }
            #expect(tokens == expected, "round \(round)")
            #expect(tokens.count == min(count, room), "a full ring takes what fits, without failing")
            next += tokens.count
            #expect(memcmp(burst.ring, single.ring, bytes) == 0, "round \(round): ring memory differs")
            #expect(burst.driverNeedsNotification() == single.driverNeedsNotification())
            #expect(burst.freeDescriptors == single.freeDescriptors && burst.inFlight == single.inFlight)
            // The device sees the same buffers; it gives back all but one each round (one stays in flight).
            var popped: [AvailableChain] = []
            while let (b, be) = try burst.pop() {
                let (s, se) = try #require(try single.pop())
                #expect(b.id == s.id && be == se)
                #expect(be.count == 1 && be[0].writable == writable)
                popped.append(b)
            }
            #expect(popped.map(\.id) == tokens)
            for c in popped.dropLast() {
                burst.pushUsed(id: c.id, length: c.writableLength > 0 ? 10 : 0, ringDescriptors: c.ringDescriptors)
                single.pushUsed(id: c.id, length: c.writableLength > 0 ? 10 : 0, ringDescriptors: c.ringDescriptors)
            }
            let got = try burst.pollBurst(maximum: size)
            var want: [UsedBuffer] = []
            while let u = try single.poll() { want.append(u) }
            #expect(got.map(\.token) == want.map(\.token) && got.map(\.length) == want.map(\.length))
            if let last = popped.last {
                burst.pushUsed(id: last.id, length: 0, ringDescriptors: last.ringDescriptors)
                single.pushUsed(id: last.id, length: 0, ringDescriptors: last.ringDescriptors)
                #expect(try burst.pollBurst(maximum: 1).map(\.token) == [last.id])
                #expect(try single.poll()?.token == last.id)
            }
        }
        #expect(next > 2 * size, "the rings wrapped at least twice")
        // The bookkeeping matches too: a used length on a device-readable buffer breaks both alike.
        let t = try burst.addBurst(Self.elements(2, from: next), writable: false)
        _ = try single.addOne(Self.elements(1, from: next)[0], writable: false)
        while try burst.pop() != nil {}
        while try single.pop() != nil {}
        burst.pushUsed(id: t[0], length: 1, ringDescriptors: 1)
        single.pushUsed(id: t[0], length: 1, ringDescriptors: 1)
        #expect(throws: RingError.self) { _ = try burst.pollBurst(maximum: 1) }
        #expect(throws: RingError.self) { _ = try single.poll() }
        #expect(burst.driverViolation != nil && burst.driverViolation == single.driverViolation)
    }

    /// pollBurst stops at `maximum` and leaves the rest for the next call, in order.
    @Test(arguments: configurations)
    func pollBurstTakesAtMostMaximum(layout: Layout, inOrder: Bool) throws {
        let pair = try makePair(layout, size: 8, features: RingFeatures(inOrder: inOrder))
        let tokens = try pair.addBurst(Self.elements(6, from: 0), writable: true)
        while let (c, _) = try pair.pop() { pair.pushUsed(id: c.id, length: 5, ringDescriptors: c.ringDescriptors) }
        let first = try pair.pollBurst(maximum: 4)
        let rest = try pair.pollBurst(maximum: 8)
        #expect((first + rest).map(\.token) == tokens)
        #expect(first.count == 4 && rest.count == 2)
        #expect(try pair.pollBurst(maximum: 8).isEmpty)
    }

    /// A device that breaks a rule after returning good buffers: the burst hands out the good ones,
    /// the next call throws, and a broken queue takes no burst.
    @Test(arguments: Layout.allCases)
    func brokenQueueRefusesBursts(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        _ = try pair.addBurst(Self.elements(3, from: 0), writable: true)
        let (good, _) = try #require(try pair.pop())
        pair.pushUsed(id: good.id, length: 8, ringDescriptors: 1)
        pair.pushUsed(id: 9, length: 8, ringDescriptors: 1)  // out of range: the queue breaks
        #expect(try pair.pollBurst(maximum: 8).map(\.token) == [good.id])
        #expect(throws: RingError.self) { _ = try pair.pollBurst(maximum: 8) }
        #expect(pair.driverViolation == .usedIDOutOfRange(id: 9, queueSize: 8))
        let before = pair.freeDescriptors
        #expect(throws: RingError.self) { _ = try pair.addBurst(Self.elements(2, from: 10), writable: true) }
        #expect(pair.freeDescriptors == before, "a broken queue adds nothing")
    }

    /// The device's burst writes the same ring bytes as single pushes, chains of several
    /// descriptors and out-of-order ids included, and the driver takes them back in that order.
    @Test(arguments: Layout.allCases)
    func deviceBurstEqualsSinglePushes(layout: Layout) throws {
        let size = 8
        let burst = try makePair(layout, size: size)
        let single = try makePair(layout, size: size)
        let bytes = try Self.ringBytes(layout, size)
        for round in 0..<5 {
            for pair in [burst, single] {
                _ = try pair.add(readable: Self.elements(2, from: round), writable: [])
                _ = try pair.addOne(Self.elements(1, from: round + 2)[0], writable: true)
                _ = try pair.add(readable: [], writable: Self.elements(3, from: round + 3))
            }
            var chains: [(id: UInt16, length: UInt32, ringDescriptors: UInt16)] = []
            while let (c, _) = try burst.pop() {
                chains.append((c.id, c.writableLength > 0 ? UInt32(c.writableLength) - 1 : 0, c.ringDescriptors))
            }
            while try single.pop() != nil {}
            chains.reverse()  // out of order
            burst.pushUsedBurst(chains)
            for c in chains { single.pushUsed(id: c.id, length: c.length, ringDescriptors: c.ringDescriptors) }
            #expect(memcmp(burst.ring, single.ring, bytes) == 0, "round \(round): ring memory differs")
            #expect(burst.deviceNeedsInterrupt() == single.deviceNeedsInterrupt())
            #expect(burst.devicePosition == single.devicePosition)
            let got = try burst.pollBurst(maximum: size)
            #expect(got.map(\.token) == chains.map(\.id) && got.map(\.length) == chains.map(\.length))
            while try single.poll() != nil {}
        }
    }
}
