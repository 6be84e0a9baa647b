import Testing
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice

/// One offer of the five ring features.
struct Offer: CustomTestStringConvertible, Sendable {
    let packed, inOrder, eventIdx, indirect, notificationData: Bool
    var spec: String {
        func o(_ b: Bool) -> String { b ? "on" : "off" }
        return "packed=\(o(packed)),in_order=\(o(inOrder)),event_idx=\(o(eventIdx)),indirect=\(o(indirect)),notification_data=\(o(notificationData))"
    }
    var testDescription: String { spec }
    static let all: [Offer] = (0..<32).map {
        Offer(packed: $0 & 1 != 0, inOrder: $0 & 2 != 0, eventIdx: $0 & 4 != 0, indirect: $0 & 8 != 0, notificationData: $0 & 16 != 0)
    }
}

/// packed x in-order x event idx x indirect x notification data: each negotiates exactly what was
/// offered and moves verified data with requests in flight, with no conformance violation.
@Suite(.leakChecked) struct NegotiationMatrixTests {
    @Test(arguments: Offer.all)
    func negotiatesAndMovesVerifiedData(offer: Offer) throws {
        let (f, blk) = try attach("size=2M,queue_size=64," + offer.spec)
        let n = blk.negotiated
        #expect(n.contains(VirtioFeature.ringPacked) == offer.packed)
        #expect(n.contains(VirtioFeature.inOrder) == offer.inOrder)
        #expect(n.contains(VirtioFeature.eventIdx) == offer.eventIdx)
        #expect(n.contains(VirtioFeature.indirectDesc) == offer.indirect)
        #expect(n.contains(VirtioFeature.notificationData) == offer.notificationData)
        let info = blk.device.queues[0]
        #expect(info.layout == (offer.packed ? .packed : .split))
        #expect(info.inOrder == offer.inOrder)

        // 300 writes then 300 reads of 4 KiB blocks, 12 in flight (3 descriptors each without indirect).
        let blocks = 300, depth = 12
        let data = try blk.allocateBuffer(bytes: blocks * 4096)
        for b in 0..<blocks { fill(data.slice(offset: b * 4096, length: 4096), lba: UInt64(b), gen: 7) }
        let expected = bytes(data)
        var inversions = 0
        for op in [BlockOperation.write, .read] {
            var completionOrder: [UInt64] = []
            defer { inversions += zip(completionOrder, completionOrder.dropFirst()).filter { $0.0 > $0.1 }.count }
            if op == .read { data.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: blocks * 4096) }
            try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws in
                var next = 0, done = 0
                while done < blocks {
                    while next < blocks, q.inFlight < depth {
                        let e = BufferElement(address: data.deviceAddress + UInt64(next * 4096), length: 4096)
                        try q.submit(op, sector: UInt64(next * 8), data: e, tag: UInt64(next))
                        next += 1
                    }
                    q.kick()
                    while let c = try q.poll() {
                        #expect(c.result == .ok)
                        if op == .read { #expect(c.usedLength == 4097 || offer.inOrder) }
                        completionOrder.append(c.tag)
                        done += 1
                    }
                }
            }
        }
        #expect(bytes(data) == expected)
        // In order when IN_ORDER is negotiated; the device deliberately reorders otherwise.
        if offer.inOrder { #expect(inversions == 0) } else { #expect(inversions > 100) }
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
        // Event idx suppresses doorbells when the device is already running; without it each kick rings.
        let counters = blk.counters(queue: 0)
        #expect(counters.notificationsSent + counters.notificationsSuppressed > 0)
    }
}
