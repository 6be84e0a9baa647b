import Testing
import VirtioRing

@Suite("Suspend and resume")
struct PositionTests {
    @Test("vhost VRING_BASE and seed 003 encodings round-trip")
    func encodings() {
        let p = RingPosition(packed: 0x1234, availWrap: true, nextUsed: 0x0042, usedWrap: false)
        #expect(p.vhostVringBase == 0x0042_9234)
        #expect(p.availState == 0x9234 && p.usedState == 0x0042)
        #expect(RingPosition(packed: true, vhostVringBase: p.vhostVringBase) == p)
        #expect(RingPosition(packed: true, availState: p.availState, usedState: p.usedState) == p)
        let s = RingPosition(split: 0xfffe, nextUsed: 0xfff0)
        #expect(s.vhostVringBase == 0xfffe && s.availState == 0xfffe)
        #expect(RingPosition(packed: false, vhostVringBase: 0xfffe, usedIndex: 0xfff0) == s)
    }

    /// The device is suspended mid-stream (its position saved as a vhost VRING_BASE value),
    /// a new device resumes from it over the same rings, and no buffer is lost or doubled.
    @Test("a device resumed from its saved position continues the stream",
          arguments: Layout.allCases, [false, true])
    func resume(layout: Layout, inOrder: Bool) throws {
        let size = layout == .packed ? 13 : 16
        let pair = try makePair(layout, size: size, features: RingFeatures(inOrder: inOrder))
        let t = try Traffic(pair, seed: 99, checkOrder: inOrder)
        for cycle in 0..<20 {
            try t.fill(maxChain: 3)
            // The device takes some buffers and completes exactly those, then is suspended
            // while the rest are still available in the ring.
            for _ in 0..<(1 + cycle % 3) {
                if let c = try pair.pop() { t.held.append(c) }
            }
            t.deviceComplete(inOrder ? .inOrder : .outOfOrder)
            let saved = pair.devicePosition.vhostVringBase
            let usedIdx = layout == .split ? pair.devicePosition.nextUsed : 0
            pair.resumeDevice(from: RingPosition(packed: layout == .packed, vhostVringBase: saved, usedIndex: usedIdx))
            try t.devicePopAll()
            t.deviceComplete(inOrder ? .inOrderBatches : .outOfOrder)
            try t.driverReapAll()
        }
        t.expectDrained()
        #expect(pair.devicePosition.nextAvail == pair.driverPosition.nextAvail)
    }
}
