import Testing
import VirtioRing

/// A queue that found a violation stays broken even when what follows looks valid: the rings
/// check the violation only where they refresh the other side's index or flags (off the
/// per-buffer path), so these pin that a good entry after a bad one is never taken.
@Suite("Broken stays broken")
struct BrokenStaysBrokenTests {
    static let element = BufferElement(address: 0x1_0000_0000, length: 64)

    static func violation(_ body: () throws -> Void) -> RingViolation? {
        do { try body(); return nil } catch {
            if case let .broken(v)? = error as? RingError { return v }
            return nil
        }
    }

    /// The device returns a good buffer, one with an id out of range, then two good ones, all
    /// under one used index (split) or in consecutive descriptors (packed): only the first is taken.
    @Test(arguments: Layout.allCases)
    func goodUsedEntriesAfterABadOneAreNotTaken(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        let tokens = try (0..<4).map { _ in try pair.addOne(Self.element, writable: true) }
        var chains: [AvailableChain] = []
        while let (chain, _) = try pair.pop() { chains.append(chain) }
        #expect(chains.count == 4)
        pair.pushUsed(id: chains[0].id, length: 8, ringDescriptors: 1)
        pair.pushUsed(id: 9, length: 8, ringDescriptors: 1)
        pair.pushUsed(id: chains[2].id, length: 8, ringDescriptors: 1)
        pair.pushUsed(id: chains[3].id, length: 8, ringDescriptors: 1)
        #expect(try pair.poll()?.token == tokens[0])
        #expect(Self.violation { _ = try pair.poll() } == .usedIDOutOfRange(id: 9, queueSize: 8))
        // A hostile device then rewrites the bad entry into a good one: still nothing is taken.
        if layout == .split {
            let used = pair.ring + (try SplitLayout(queueSize: 8)).usedOffset
            used.storeBytes(of: UInt32(chains[1].id), toByteOffset: 4 + 8, as: UInt32.self)
        } else {
            (pair.ring + 16).storeBytes(of: chains[1].id, toByteOffset: 12, as: UInt16.self)
        }
        for _ in 0..<3 {
            #expect(Self.violation { _ = try pair.poll() } == .usedIDOutOfRange(id: 9, queueSize: 8),
                    "a good entry after the bad one is not returned")
        }
        // The single add says why it refuses (broken, not full), and so does a burst.
        #expect(Self.violation { _ = try pair.addOne(Self.element, writable: true) } == .usedIDOutOfRange(id: 9, queueSize: 8))
        #expect(Self.violation { _ = try pair.addBurst([Self.element], writable: true) } == .usedIDOutOfRange(id: 9, queueSize: 8))
        #expect(pair.freeDescriptors == 0)
    }

    /// A driver breaks the device side with a bad head; buffers it adds correctly afterwards are refused.
    @Test(arguments: Layout.allCases)
    func goodChainsAfterABadOneAreNotPopped(layout: Layout) throws {
        let pair = try makePair(layout, size: 8)
        _ = try pair.addOne(Self.element, writable: true)
        #expect(try pair.pop() != nil)
        let expected: RingViolation
        if layout == .split {
            // avail ring slot 1 names head 8 of a size-8 queue, then two good buffers follow it.
            let avail = pair.ring + (try SplitLayout(queueSize: 8)).availOffset
            _ = try pair.addOne(Self.element, writable: true)
            _ = try pair.addOne(Self.element, writable: true)
            _ = try pair.addOne(Self.element, writable: true)
            avail.storeBytes(of: UInt16(8), toByteOffset: 4 + 2, as: UInt16.self)
            expected = .headOutOfRange(head: 8, queueSize: 8)
        } else {
            // Descriptor 1 is made available with NEXT into descriptor 2, which is not available.
            let d = pair.ring + 16
            d.storeBytes(of: DescriptorFlags.avail | DescriptorFlags.next, toByteOffset: 14, as: UInt16.self)
            expected = .chainDescriptorNotAvailable(position: 2, flags: 0)
        }
        #expect(Self.violation { _ = try pair.pop() } == expected)
        if layout == .packed {
            // Now publish good descriptors at 2 and 3, as a driver that recovered might.
            for i in 2...3 {
                let d = pair.ring + i * 16
                d.storeBytes(of: UInt64(0x1_0000_0000), toByteOffset: 0, as: UInt64.self)
                d.storeBytes(of: UInt32(64), toByteOffset: 8, as: UInt32.self)
                d.storeBytes(of: DescriptorFlags.avail | DescriptorFlags.write, toByteOffset: 14, as: UInt16.self)
            }
        }
        for _ in 0..<3 {
            #expect(Self.violation { _ = try pair.pop() } == expected, "a good chain after the bad one is not popped")
        }
        #expect(pair.deviceViolation == expected)
    }
}
