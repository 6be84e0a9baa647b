/// The device side of a virtqueue, either layout: what the software device runs.
/// It validates everything the driver wrote before using it.
public protocol DeviceRing: ~Copyable {
    var queueSize: Int { get }
    var violation: RingViolation? { get }
    /// Takes the next available buffer, writing its elements into `elements`
    /// (whose capacity is the device's chain limit). Nil when nothing is available.
    mutating func popAvailable(into elements: UnsafeMutableBufferPointer<ChainElement>) throws(RingError) -> AvailableChain?
    /// Marks one buffer used. The device side does not check what it is told: a test may lie through it.
    mutating func pushUsed(id: UInt16, length: UInt32, ringDescriptors: UInt16)
    /// In-order batch: one used entry for the last buffer; `buffers` and `ringDescriptors` total the batch.
    mutating func pushUsedBatch(lastID: UInt16, length: UInt32, buffers: UInt16, ringDescriptors: UInt16)
    /// Burst: marks `count` buffers used, entry `i` from `ids[i]`, `lengths[i]`, `ringDescriptors[i]`,
    /// published to the driver at once (one used-idx store, or the first used descriptor's flags last).
    mutating func pushUsedBurst(ids: UnsafePointer<UInt16>, lengths: UnsafePointer<UInt32>,
                                ringDescriptors: UnsafePointer<UInt16>, count: Int)
    /// After pushing used buffers: whether the driver asked to be notified (full barrier inside).
    mutating func needsInterrupt() -> Bool
    mutating func disableAvailNotifications()
    /// Asks for available-buffer notifications; true when buffers are already available.
    mutating func enableAvailNotifications() -> Bool
    /// For suspend/resume (vhost VRING_BASE, seed 003 states).
    var position: RingPosition { get }
}

extension DeviceRing where Self: ~Copyable {
    /// Returns a popped chain used with `length` bytes written.
    @inlinable
    public mutating func pushUsed(_ chain: AvailableChain, length: UInt32) {
        pushUsed(id: chain.id, length: length, ringDescriptors: chain.ringDescriptors)
    }
}

/// Collects a chain's elements into the caller's scratch, enforcing the framing rules.
@usableFromInline
struct ChainCollector {
    @usableFromInline let out: UnsafeMutableBufferPointer<ChainElement>
    @usableFromInline var count = 0
    @usableFromInline var readable = 0
    @usableFromInline var total: UInt64 = 0
    @usableFromInline var writableBytes: UInt64 = 0

    @inlinable
    init(_ out: UnsafeMutableBufferPointer<ChainElement>) { self.out = out }

    @inlinable @inline(__always)
    mutating func append(address: UInt64, length: UInt32, writable: Bool, position: UInt16) -> RingViolation? {
        guard count < out.count else { return .chainTooLong(limit: out.count) }
        if writable {
            writableBytes &+= UInt64(length)
        } else {
            // Device-readable elements come before every device-writable one.
            guard readable == count else { return .readableAfterWritable(position: position) }
            readable &+= 1
        }
        total &+= UInt64(length)
        guard total <= 1 << 32 else { return .chainTotalTooLarge }
        out[count] = ChainElement(address: address, length: length, writable: writable)
        count &+= 1
        return nil
    }

    /// Walks an indirect table. Split tables chain through `next`; packed tables are sequential.
    @inlinable
    mutating func appendIndirect<M: DeviceMemory>(table address: UInt64, length: UInt32, memory: M,
                                                  split: Bool) -> RingViolation? {
        guard length > 0, length % 16 == 0, Int(length / 16) <= out.count else {
            return .indirectTableLength(length: length)
        }
        guard let table = memory.pointer(at: address, length: Int(length)) else {
            return .untranslatableAddress(address: address, length: length)
        }
        let entries = UInt16(length / 16)
        var i: UInt16 = 0
        var visited: UInt16 = 0
        while true {
            visited &+= 1
            guard visited <= entries else { return .chainTooLong(limit: Int(entries)) }
            let d = table + Int(i) &* 16
            let addr = d.loadLE(at: 0, as: UInt64.self)
            let len = d.loadLE(at: 8, as: UInt32.self)
            let flags = d.loadLE(at: split ? 12 : 14, as: UInt16.self)
            if flags & DescriptorFlags.indirect != 0 { return .nestedIndirect(position: i) }
            if !split && flags & ~DescriptorFlags.write != 0 { return .indirectTableFlags(flags: flags) }
            if let v = append(address: addr, length: len, writable: flags & DescriptorFlags.write != 0, position: i) {
                return v
            }
            if split {
                guard flags & DescriptorFlags.next != 0 else { return nil }
                let next = d.loadLE(at: 14, as: UInt16.self)
                guard next < entries else { return .nextOutOfRange(next: next, queueSize: Int(entries)) }
                i = next
            } else {
                i &+= 1
                if i == entries { return nil }
            }
        }
    }

    @inlinable
    func chain(id: UInt16, ringDescriptors: UInt16) -> AvailableChain {
        AvailableChain(id: id, elementCount: count, readableCount: readable, ringDescriptors: ringDescriptors,
                       writableLength: writableBytes)
    }
}
