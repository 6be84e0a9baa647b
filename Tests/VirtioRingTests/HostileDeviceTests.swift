import Testing
import VirtioRing

/// A device that breaks a rule puts the driver queue in a broken state with an error that
/// names the rule; nothing crashes, hangs or completes twice, and later calls keep failing.
@Suite("Hostile device")
struct HostileDeviceTests {
    /// Adds `count` one-element writable buffers (64 bytes) and lets the device pop them.
    static func setUp(_ layout: Layout, size: Int = 8, count: Int = 2,
                      features: RingFeatures = RingFeatures()) throws -> (any RingPair, [UInt16]) {
        let pair = try makePair(layout, size: size, features: features)
        var tokens: [UInt16] = []
        for k in 0..<count {
            tokens.append(try pair.add(readable: [], writable: [BufferElement(address: 0x1_0000_8000 + UInt64(k) * 64, length: 64)]))
        }
        while try pair.pop() != nil {}
        return (pair, tokens)
    }

    /// Polls until the queue breaks; returns what it returned before and the violation.
    static func expectBroken(_ pair: any RingPair, returnedBefore: Int = 0,
                             sourceLocation: SourceLocation = #_sourceLocation) -> RingViolation? {
        var returned = 0
        var violation: RingViolation?
        for _ in 0..<100 {
            do {
                guard try pair.poll() != nil else { break }
                returned += 1
            } catch {
                if case let .broken(v) = error { violation = v }
                break
            }
        }
        #expect(returned == returnedBefore, "buffers returned before the violation", sourceLocation: sourceLocation)
        #expect(violation != nil, "the queue did not break", sourceLocation: sourceLocation)
        #expect(pair.driverViolation == violation, sourceLocation: sourceLocation)
        // Broken stays broken: no more buffers in or out.
        #expect(throws: RingError.self, sourceLocation: sourceLocation) { _ = try pair.poll() }
        #expect(throws: RingError.self, sourceLocation: sourceLocation) {
            _ = try pair.add(readable: [BufferElement(address: 0x1_0000_9000, length: 8)], writable: [])
        }
        return violation
    }

    @Test("used id out of range", arguments: Layout.allCases)
    func idOutOfRange(layout: Layout) throws {
        let (pair, _) = try Self.setUp(layout)
        pair.pushUsed(id: 8, length: 0, ringDescriptors: 1)
        let v = Self.expectBroken(pair)
        #expect(v == .usedIDOutOfRange(id: 8, queueSize: 8))
        #expect(v?.description.contains("id < queue size") == true)
    }

    @Test("split used id beyond 16 bits")
    func splitWideID() throws {
        let (pair, _) = try Self.setUp(.split)
        let layout = try SplitLayout(queueSize: 8)
        let used = pair.ring + layout.usedOffset
        used.storeBytes(of: UInt32(0x1_0001), toByteOffset: 4, as: UInt32.self)  // id 65537 truncates to 1
        used.storeBytes(of: UInt16(1), toByteOffset: 2, as: UInt16.self)
        #expect(Self.expectBroken(pair) == .usedIDOutOfRange(id: 0x1_0001, queueSize: 8))
    }

    @Test("used id that is not in flight", arguments: Layout.allCases)
    func idNotInFlight(layout: Layout) throws {
        let (pair, tokens) = try Self.setUp(layout, count: 1)
        let stranger: UInt16 = tokens[0] == 5 ? 6 : 5
        pair.pushUsed(id: stranger, length: 0, ringDescriptors: 1)
        #expect(Self.expectBroken(pair) == .usedIDNotInFlight(id: UInt32(stranger)))
    }

    @Test("a buffer completed twice comes back once", arguments: Layout.allCases)
    func doubleCompletion(layout: Layout) throws {
        let (pair, tokens) = try Self.setUp(layout, count: 2)
        pair.pushUsed(id: tokens[0], length: 4, ringDescriptors: 1)
        pair.pushUsed(id: tokens[0], length: 4, ringDescriptors: 1)
        #expect(Self.expectBroken(pair, returnedBefore: 1) == .usedIDNotInFlight(id: UInt32(tokens[0])))
    }

    @Test("used length larger than the writable part", arguments: Layout.allCases)
    func lengthTooLarge(layout: Layout) throws {
        let (pair, tokens) = try Self.setUp(layout, count: 1)
        pair.pushUsed(id: tokens[0], length: 65, ringDescriptors: 1)
        #expect(Self.expectBroken(pair) == .usedLengthExceedsWritable(id: tokens[0], length: 65, writable: 64))
    }

    @Test("packed: USED flipped without AVAIL")
    func inconsistentBits() throws {
        let (pair, _) = try Self.setUp(.packed, count: 1)
        // Slot 0 under wrap 1: the driver wrote AVAIL=1 USED=0; a used descriptor has both 1.
        let flags = pair.ring.advanced(by: 14)
        flags.storeBytes(of: DescriptorFlags.used, as: UInt16.self)  // AVAIL=0 USED=1
        #expect(Self.expectBroken(pair) == .inconsistentAvailUsedBits(position: 0, flags: DescriptorFlags.used, wrap: true))
    }

    @Test("split: used idx jumps past the buffers in flight")
    func usedIndexJump() throws {
        let (pair, _) = try Self.setUp(.split, count: 2)
        let layout = try SplitLayout(queueSize: 8)
        (pair.ring + layout.usedOffset).storeBytes(of: UInt16(9), toByteOffset: 2, as: UInt16.self)
        #expect(Self.expectBroken(pair) == .usedIndexJump(from: 0, to: 9, inFlight: 2))
    }

    @Test("split in-order: a batch larger than the used idx advance")
    func inOrderBatchTooLarge() throws {
        let (pair, tokens) = try Self.setUp(.split, count: 3, features: RingFeatures(inOrder: true))
        // One entry naming the third buffer, but idx advanced by one only.
        pair.pushBatch(lastID: tokens[2], length: 0, buffers: 1, ringDescriptors: 1)
        #expect(Self.expectBroken(pair) == .inOrderBatchExceedsUsedIndex(id: tokens[2], buffers: 3, advance: 1))
    }

    @Test("in-order: a batch naming a buffer never made available", arguments: Layout.allCases)
    func inOrderBatchUnknownID(layout: Layout) throws {
        let (pair, _) = try Self.setUp(layout, count: 2, features: RingFeatures(inOrder: true))
        pair.pushBatch(lastID: 6, length: 0, buffers: 2, ringDescriptors: 2)
        #expect(Self.expectBroken(pair) == .usedIDNotInFlight(id: 6))
    }

    @Test("a spurious used notification finds nothing and breaks nothing", arguments: Layout.allCases)
    func spurious(layout: Layout) throws {
        let (pair, _) = try Self.setUp(layout, count: 2)
        #expect(try pair.poll() == nil)
        #expect(pair.driverViolation == nil)
    }
}
