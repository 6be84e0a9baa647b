import PropertyBased
import TestSupport
import Testing
import VirtioRing

/// Random operation sequences: whatever the interleaving of adds, pops, completions
/// (in any order the features allow) and polls, every buffer comes back exactly once
/// with the length the device reported.
@Suite("Properties")
struct PropertyTests {
    static func run(layout: Layout, size: Int, indirect: Bool, eventIndex: Bool, inOrder: Bool, seed: UInt64, steps: Int) throws {
        let features = RingFeatures(indirect: indirect, eventIndex: eventIndex, inOrder: inOrder)
        let pair = try makePair(layout, size: size, features: features, indirectMax: indirect ? 6 : 0)
        let t = try Traffic(pair, seed: seed, checkOrder: inOrder)
        var rng = SplitMix(seed: seed ^ 0xabcdef)
        let mode: Completion = inOrder ? (rng.chance(50) ? .inOrder : .inOrderBatches) : .outOfOrder
        let maxChain = indirect ? 6 : min(size, 4)
        for _ in 0..<steps {
            switch rng.below(6) {
            case 0, 1: try t.fill(maxChain: maxChain, limit: 1 + rng.below(4))
            case 2: try t.devicePopAll()
            case 3: t.deviceComplete(mode, count: 1 + rng.below(3))
            case 4: try t.driverReapAll()
            default:
                _ = pair.driverNeedsNotification()
                if rng.chance(50) { pair.disableUsedNotifications() } else { _ = pair.enableUsedNotifications() }
            }
        }
        try t.devicePopAll(); t.deviceComplete(mode); try t.driverReapAll()
        t.expectDrained()
    }

    @Test("random operation sequences, packed")
    func packed() async {
        await propertyCheck(count: 150, input: Gen.int(in: 1...300), Gen.int(in: 0...7), Gen.int(in: 0...Int.max)) { size, flags, seed in
            #expect(throws: Never.self) {
                try Self.run(layout: .packed, size: size, indirect: flags & 1 != 0, eventIndex: flags & 2 != 0,
                             inOrder: flags & 4 != 0, seed: UInt64(seed), steps: 300)
            }
        }
    }

    @Test("random operation sequences, split")
    func split() async {
        await propertyCheck(count: 150, input: Gen.int(in: 0...9), Gen.int(in: 0...7), Gen.int(in: 0...Int.max)) { log2, flags, seed in
            #expect(throws: Never.self) {
                try Self.run(layout: .split, size: 1 << log2, indirect: flags & 1 != 0, eventIndex: flags & 2 != 0,
                             inOrder: flags & 4 != 0, seed: UInt64(seed), steps: 300)
            }
        }
    }
}
