/// A rule the other side of a ring broke. Values are plain integers so that a
/// queue can hold its broken reason without reference counting.
public enum RingViolation: Error, Sendable, Equatable, CustomStringConvertible {
    // The device broke a rule (seen by the driver side).
    case usedIDOutOfRange(id: UInt32, queueSize: Int)
    case usedIDNotInFlight(id: UInt32)
    case usedLengthExceedsWritable(id: UInt16, length: UInt32, writable: UInt32)
    case inconsistentAvailUsedBits(position: UInt16, flags: UInt16, wrap: Bool)
    case usedIndexJump(from: UInt16, to: UInt16, inFlight: Int)
    case inOrderBatchExceedsUsedIndex(id: UInt16, buffers: Int, advance: Int)
    // The driver broke a rule (seen by the device side).
    case availIndexJump(from: UInt16, to: UInt16, queueSize: Int)
    case headOutOfRange(head: UInt16, queueSize: Int)
    case nextOutOfRange(next: UInt16, queueSize: Int)
    case chainTooLong(limit: Int)
    case readableAfterWritable(position: UInt16)
    case indirectNotNegotiated(position: UInt16)
    case indirectWithNext(position: UInt16)
    case indirectInChain(position: UInt16)
    case nestedIndirect(position: UInt16)
    case indirectTableLength(length: UInt32)
    case indirectTableFlags(flags: UInt16)
    case untranslatableAddress(address: UInt64, length: UInt32)
    case chainDescriptorNotAvailable(position: UInt16, flags: UInt16)
    case chainTotalTooLarge
    case badEventFlags(flags: UInt16)

    /// The spec clause the violation breaks, in words.
    public var rule: String {
        switch self {
        case .usedIDOutOfRange: "a used id must name a buffer of the queue (id < queue size)"
        case .usedIDNotInFlight: "a used id must name a buffer the driver made available and not yet got back"
        case .usedLengthExceedsWritable: "the used length counts bytes written into the device-writable part only"
        case .inconsistentAvailUsedBits: "Packed Virtqueues / Driver and Device Ring Wrap Counters: a used descriptor has AVAIL and USED both equal to the Device Ring Wrap Counter"
        case .usedIndexJump: "Split Virtqueues / The Virtqueue Used Ring: used idx may only advance by buffers that are in flight"
        case .inOrderBatchExceedsUsedIndex: "Split Virtqueues / In-order use of descriptors: used idx advances by the number of buffers in the batch"
        case .availIndexJump: "Split Virtqueues / The Virtqueue Available Ring: avail idx may not run more than queue size ahead of the device"
        case .headOutOfRange: "Split Virtqueues / The Virtqueue Available Ring: an avail ring entry must name a descriptor of the table"
        case .nextOutOfRange: "Split Virtqueues / The Virtqueue Descriptor Table: next must name a descriptor of the table"
        case .chainTooLong: "Descriptor Table / Descriptor Ring driver requirements: a descriptor chain must not be longer than the queue size (no loops)"
        case .readableAfterWritable: "Message Framing / Scatter-Gather Support: device-writable elements come after all device-readable ones"
        case .indirectNotNegotiated: "Indirect Descriptors: VIRTQ_DESC_F_INDIRECT needs VIRTIO_F_INDIRECT_DESC"
        case .indirectWithNext: "Split Virtqueues / Indirect Descriptors: INDIRECT and NEXT must not both be set"
        case .indirectInChain: "Packed Virtqueues / Indirect Descriptors: an indirect descriptor must not be part of a chain"
        case .nestedIndirect: "Indirect Descriptors: an indirect table must not contain an indirect descriptor"
        case .indirectTableLength: "Indirect Descriptors: an indirect table is a non-empty multiple of 16 bytes within the chain limit"
        case .indirectTableFlags: "Packed Virtqueues / Indirect Descriptors: the only flag inside a packed indirect table is WRITE"
        case .untranslatableAddress: "the address must lie in memory the driver gave the device"
        case .chainDescriptorNotAvailable: "Packed Virtqueues / Driver Requirements: Scatter-Gather Support: every descriptor of a chain is made available before its head"
        case .chainTotalTooLarge: "Split Virtqueues / The Virtqueue Descriptor Table: a chain must not total more than 2^32 bytes"
        case .badEventFlags: "Packed Virtqueues / Event Suppression Structure Format: event flags value 0x3 is reserved; DESC needs VIRTIO_F_EVENT_IDX"
        }
    }

    public var description: String { "\(detail): \(rule)" }

    /// What the other side did, with the values it wrote (without the rule).
    public var detail: String {
        switch self {
        case let .usedIDOutOfRange(id, n): "used id \(id) out of range (queue size \(n))"
        case let .usedIDNotInFlight(id): "used id \(id) is not a buffer in flight"
        case let .usedLengthExceedsWritable(id, len, w): "used length \(len) for id \(id) exceeds its \(w) writable bytes"
        case let .inconsistentAvailUsedBits(pos, flags, wrap):
            "descriptor \(pos) flags 0x\(String(flags, radix: 16)) are inconsistent with used wrap counter \(wrap ? 1 : 0)"
        case let .usedIndexJump(from, to, n): "used idx jumped from \(from) to \(to) with \(n) buffers in flight"
        case let .inOrderBatchExceedsUsedIndex(id, b, a): "in-order batch ending at id \(id) retires \(b) buffers but used idx advanced by \(a)"
        case let .availIndexJump(from, to, n): "avail idx jumped from \(from) to \(to) (queue size \(n))"
        case let .headOutOfRange(h, n): "avail head \(h) out of range (queue size \(n))"
        case let .nextOutOfRange(nx, n): "descriptor next \(nx) out of range (queue size \(n))"
        case let .chainTooLong(limit): "descriptor chain longer than \(limit)"
        case let .readableAfterWritable(pos): "readable descriptor after a writable one at \(pos)"
        case let .indirectNotNegotiated(pos): "indirect descriptor at \(pos) without VIRTIO_F_INDIRECT_DESC"
        case let .indirectWithNext(pos): "descriptor \(pos) has both INDIRECT and NEXT"
        case let .indirectInChain(pos): "indirect descriptor at \(pos) inside a chain"
        case let .nestedIndirect(pos): "indirect descriptor inside an indirect table (entry \(pos))"
        case let .indirectTableLength(len): "indirect table length \(len) is invalid"
        case let .indirectTableFlags(flags): "indirect table entry has flags 0x\(String(flags, radix: 16))"
        case let .untranslatableAddress(addr, len): "address 0x\(String(addr, radix: 16)) length \(len) is outside DMA memory"
        case let .chainDescriptorNotAvailable(pos, flags): "chain descriptor \(pos) is not available (flags 0x\(String(flags, radix: 16)))"
        case .chainTotalTooLarge: "chain totals more than 2^32 bytes"
        case let .badEventFlags(flags): "event suppression flags 0x\(String(flags, radix: 16))"
        }
    }
}

/// Errors from ring operations.
public enum RingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not enough free descriptors for the buffer now; retry after reaping used buffers.
    case full
    /// The queue is broken: the other side broke the named rule. Nothing more is accepted.
    case broken(RingViolation)
    /// A buffer with no elements, or more elements than the queue can ever hold.
    case invalidBuffer(String)
    case invalidQueueSize(Int, packed: Bool)

    public var description: String {
        switch self {
        case .full: "no free descriptors"
        case let .broken(v): "queue broken: \(v)"
        case let .invalidBuffer(why): "invalid buffer: \(why)"
        case let .invalidQueueSize(n, packed):
            packed ? "packed queue size \(n) is not in 1...32768"
                : "split queue size \(n) is not a power of two in 1...32768"
        }
    }
}
