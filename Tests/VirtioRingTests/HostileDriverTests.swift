import Testing
import VirtioRing

/// The device side validates what a driver wrote before using it (the software device
/// relies on this to survive a buggy driver).
@Suite("Device-side validation")
struct HostileDriverTests {
    static func writeSplitDescriptor(_ ring: UnsafeMutableRawPointer, _ i: Int, address: UInt64, length: UInt32,
                                     flags: UInt16, next: UInt16) {
        let d = ring + i * 16
        d.storeBytes(of: address, toByteOffset: 0, as: UInt64.self)
        d.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
        d.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
    }

    /// Publishes head `head` in the split avail ring of a size-8 queue and pops it.
    static func popSplit(_ pair: any RingPair, head: UInt16, idx: UInt16 = 1) -> RingViolation? {
        let layout = try! SplitLayout(queueSize: 8)
        let avail = pair.ring + layout.availOffset
        avail.storeBytes(of: head, toByteOffset: 4, as: UInt16.self)
        avail.storeBytes(of: idx, toByteOffset: 2, as: UInt16.self)
        do { _ = try pair.pop(); return nil } catch {
            if case let .broken(v) = error { return v }
            return nil
        }
    }

    @Test("split: loops, bad heads, bad next, reversed framing")
    func splitChains() throws {
        var pair = try makePair(.split, size: 8)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0, length: 1, flags: DescriptorFlags.next, next: 1)
        Self.writeSplitDescriptor(pair.ring, 1, address: 0, length: 1, flags: DescriptorFlags.next, next: 0)
        #expect(Self.popSplit(pair, head: 0) == .chainTooLong(limit: 8))

        pair = try makePair(.split, size: 8)
        #expect(Self.popSplit(pair, head: 8) == .headOutOfRange(head: 8, queueSize: 8))

        pair = try makePair(.split, size: 8)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0, length: 1, flags: DescriptorFlags.next, next: 9)
        #expect(Self.popSplit(pair, head: 0) == .nextOutOfRange(next: 9, queueSize: 8))

        pair = try makePair(.split, size: 8)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0, length: 1, flags: DescriptorFlags.next | DescriptorFlags.write, next: 1)
        Self.writeSplitDescriptor(pair.ring, 1, address: 0, length: 1, flags: 0, next: 0)
        #expect(Self.popSplit(pair, head: 0) == .readableAfterWritable(position: 1))

        pair = try makePair(.split, size: 8)
        #expect(Self.popSplit(pair, head: 0, idx: 9) == .availIndexJump(from: 0, to: 9, queueSize: 8))
    }

    @Test("split: indirect misuse")
    func splitIndirect() throws {
        var pair = try makePair(.split, size: 8)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0x1_0000_0000, length: 32, flags: DescriptorFlags.indirect, next: 0)
        #expect(Self.popSplit(pair, head: 0) == .indirectNotNegotiated(position: 0))

        let indirect = RingFeatures(indirect: true)
        pair = try makePair(.split, size: 8, features: indirect)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0x1_0000_0000, length: 32,
                                  flags: DescriptorFlags.indirect | DescriptorFlags.next, next: 1)
        #expect(Self.popSplit(pair, head: 0) == .indirectWithNext(position: 0))

        pair = try makePair(.split, size: 8, features: indirect)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0x1_0000_0000, length: 24, flags: DescriptorFlags.indirect, next: 0)
        #expect(Self.popSplit(pair, head: 0) == .indirectTableLength(length: 24))

        pair = try makePair(.split, size: 8, features: indirect)
        Self.writeSplitDescriptor(pair.ring, 0, address: 0xdead_0000_0000, length: 32, flags: DescriptorFlags.indirect, next: 0)
        #expect(Self.popSplit(pair, head: 0) == .untranslatableAddress(address: 0xdead_0000_0000, length: 32))

        pair = try makePair(.split, size: 8, features: indirect)
        let table = try pair.arena.allocate(length: 32, alignment: 16)
        Self.writeSplitDescriptor(table.pointer, 0, address: 0, length: 1, flags: DescriptorFlags.indirect, next: 0)
        Self.writeSplitDescriptor(pair.ring, 0, address: table.deviceAddress, length: 32, flags: DescriptorFlags.indirect, next: 0)
        #expect(Self.popSplit(pair, head: 0) == .nestedIndirect(position: 0))
    }

    @Test("packed: chain member not available, indirect inside a chain, table flags")
    func packedChains() throws {
        func write(_ ring: UnsafeMutableRawPointer, _ i: Int, address: UInt64 = 0, length: UInt32 = 1, flags: UInt16) {
            let d = ring + i * 16
            d.storeBytes(of: address, toByteOffset: 0, as: UInt64.self)
            d.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
            d.storeBytes(of: flags, toByteOffset: 14, as: UInt16.self)
        }
        func pop(_ pair: any RingPair) -> RingViolation? {
            do { _ = try pair.pop(); return nil } catch {
                if case let .broken(v) = error { return v }
                return nil
            }
        }
        let avail = DescriptorFlags.avail
        var pair = try makePair(.packed, size: 8)
        write(pair.ring, 1, flags: 0)  // not made available
        write(pair.ring, 0, flags: avail | DescriptorFlags.next)
        #expect(pop(pair) == .chainDescriptorNotAvailable(position: 1, flags: 0))

        pair = try makePair(.packed, size: 8, features: RingFeatures(indirect: true))
        write(pair.ring, 1, address: 0x1_0000_0000, length: 32, flags: avail | DescriptorFlags.indirect)
        write(pair.ring, 0, flags: avail | DescriptorFlags.next)
        #expect(pop(pair) == .indirectInChain(position: 1))

        pair = try makePair(.packed, size: 8, features: RingFeatures(indirect: true))
        let table = try pair.arena.allocate(length: 32, alignment: 16)
        write(table.pointer, 0, flags: DescriptorFlags.next)
        write(pair.ring, 0, address: table.deviceAddress, length: 32, flags: avail | DescriptorFlags.indirect)
        #expect(pop(pair) == .indirectTableFlags(flags: DescriptorFlags.next))

        pair = try makePair(.packed, size: 8)
        write(pair.ring, 0, address: 0x1_0000_0000, length: 32, flags: avail | DescriptorFlags.indirect)
        #expect(pop(pair) == .indirectNotNegotiated(position: 0))
    }

    @Test("a chain longer than the device's limit")
    func deviceChainLimit() throws {
        let pair = try makePair(.packed, size: 8, chainLimit: 2)
        _ = try pair.add(readable: Array(repeating: BufferElement(address: 0x1_0000_1000, length: 4), count: 3), writable: [])
        #expect(throws: RingError.broken(.chainTooLong(limit: 2))) { _ = try pair.pop() }
    }
}
