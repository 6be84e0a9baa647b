import Testing
import VirtioRing

let packedSizes = [1, 2, 3, 4, 5, 7, 8, 64, 255, 256, 1024, 32768]
let splitSizes = (0...15).map { 1 << $0 }

/// Every queue size of each layout, wrapped several times with mixed chains,
/// completed both ways the features allow.
@Suite("Queue sizes")
struct QueueSizeTests {
    static func exercise(_ layout: Layout, size: Int, features: RingFeatures, mode: Completion) throws {
        let pair = try makePair(layout, size: size, features: features)
        let traffic = try Traffic(pair, seed: UInt64(size) &* 7919, checkOrder: features.inOrder)
        // Enough buffers to wrap at least three times (fewer rounds for the big rings).
        let target = size >= 4096 ? size * 2 + 17 : size * 3 + 17
        while traffic.reaped < target {
            try traffic.round(maxChain: min(size, 4), mode: mode)
        }
        traffic.expectDrained()
        if layout == .packed {
            #expect(pair.driverPosition == pair.devicePosition, "driver and device disagree on the ring position")
        }
    }

    @Test("packed ring sizes", arguments: packedSizes)
    func packed(size: Int) throws {
        try Self.exercise(.packed, size: size, features: RingFeatures(), mode: .outOfOrder)
        try Self.exercise(.packed, size: size, features: RingFeatures(inOrder: true), mode: .inOrderBatches)
    }

    @Test("split ring sizes", arguments: splitSizes)
    func split(size: Int) throws {
        try Self.exercise(.split, size: size, features: RingFeatures(), mode: .outOfOrder)
        try Self.exercise(.split, size: size, features: RingFeatures(inOrder: true), mode: .inOrderBatches)
    }

    @Test("sizes outside the spec are refused")
    func invalidSizes() {
        #expect(throws: RingError.invalidQueueSize(0, packed: true)) { try PackedLayout(queueSize: 0) }
        #expect(throws: RingError.invalidQueueSize(32769, packed: true)) { try PackedLayout(queueSize: 32769) }
        #expect(throws: RingError.invalidQueueSize(3, packed: false)) { try SplitLayout(queueSize: 3) }
        #expect(throws: RingError.invalidQueueSize(65536, packed: false)) { try SplitLayout(queueSize: 65536) }
        #expect(throws: RingError.invalidQueueSize(0, packed: false)) { try SplitLayout(queueSize: 0) }
    }
}
