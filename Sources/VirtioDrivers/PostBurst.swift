import VirtioCore
import VirtioRing

/// One burst of one-element buffers staged in private memory, then made available with a single
/// `addBurst` (one avail-idx store; DPDK's refill and `tx_burst` publish the same way).
/// `~Copyable`: it owns its staging arrays. Immutable, so its owner holds it in a `let` (a `var`
/// of it in a public struct crashes Swift 6.3.1's release inliner: "resilient function into a fragile").
@usableFromInline
struct PostBurst: ~Copyable {
    @usableFromInline let elements: UnsafeMutablePointer<BufferElement>
    @usableFromInline let tokens: UnsafeMutablePointer<UInt16>
    /// The caller's buffer slot behind each staged element.
    @usableFromInline let slots: UnsafeMutablePointer<UInt16>
    @usableFromInline let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        elements = .allocate(capacity: capacity)
        tokens = .allocate(capacity: capacity)
        slots = .allocate(capacity: capacity)
    }

    deinit {
        elements.deallocate()
        tokens.deallocate()
        slots.deallocate()
    }

    /// Stages `element` (over the caller's buffer `slot`) as entry `index` of the next burst.
    @inlinable @inline(__always)
    func stage(_ element: BufferElement, slot: UInt16, at index: Int) {
        elements[index] = element
        slots[index] = slot
    }

    /// Makes the first `staged` entries available and records each one's slot under its token;
    /// returns how many went (all unless the ring filled).
    @inlinable @inline(__always)
    func post<T: VirtioTransport>(_ staged: Int, to virtqueue: inout Virtqueue<T>, deviceWritable: Bool,
                                  tokenSlot: UnsafeMutablePointer<UInt16>) throws(RingError) -> Int {
        guard staged > 0 else { return 0 }
        let posted = try virtqueue.addBurst(UnsafeBufferPointer(start: elements, count: staged).span,
                                            deviceWritable: deviceWritable, tokens: tokens)
        for i in 0..<posted { tokenSlot[Int(tokens[i])] = slots[i] }
        return posted
    }
}
