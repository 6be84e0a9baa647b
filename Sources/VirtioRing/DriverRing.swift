/// Per-buffer driver bookkeeping, kept in private memory the device cannot reach.
@usableFromInline
struct SlotState {
    /// Free-list / chain link (split: shadow of desc.next; packed: free buffer-id list).
    @usableFromInline var next: UInt16
    /// Ring descriptors the buffer occupies while in flight; 0 when not in flight.
    @usableFromInline var count: UInt16
    /// Total device-writable bytes of the buffer.
    @usableFromInline var writable: UInt32
}

/// The driver side of a virtqueue, either layout. Conformers are `~Copyable` and
/// every requirement is meant to be called through a specialised generic.
public protocol DriverRing: ~Copyable {
    var queueSize: Int { get }
    /// Ring descriptors free for new buffers.
    var freeDescriptors: Int { get }
    /// Buffers made available and not yet returned.
    var buffersInFlight: Int { get }
    /// Set once the device broke a rule; every later call throws `.broken`.
    var violation: RingViolation? { get }
    /// Makes a buffer of device-readable then device-writable elements available; returns its
    /// token, or sets `failure` (and returns 0). The throwing `add` below is the one to call.
    mutating func add(readable: Span<BufferElement>, writable: Span<BufferElement>, failure: inout RingError?) -> UInt16
    /// Fast path for a one-element buffer (same contract).
    mutating func add(_ element: BufferElement, deviceWritable: Bool, failure: inout RingError?) -> UInt16
    /// Burst: makes one one-element buffer available per element, published to the device at once
    /// (one avail-idx store, or the first descriptor's flags last); token `i` goes to `tokens[i]`.
    /// Returns how many were added: fewer than asked when descriptors run out (not a failure).
    mutating func addBurst(_ elements: Span<BufferElement>, deviceWritable: Bool,
                           tokens: UnsafeMutablePointer<UInt16>, failure: inout RingError?) -> Int
    /// Next used buffer, or nil when the device has returned nothing new or the queue is broken
    /// (`violation` says why). No error out-parameter: one would be set up and tested per buffer
    /// (8 of the 88 instructions per buffer Swift spent over C, by callgrind), for a rare failure.
    mutating func takeUsed() -> UsedBuffer?
    /// After adds: whether the device asked to be notified of them (full barrier inside).
    mutating func needsNotification() -> Bool
    /// The 32-bit value to write with VIRTIO_F_NOTIFICATION_DATA (feature 38).
    func notificationData(queueIndex: UInt16) -> UInt32
    mutating func disableUsedNotifications()
    /// Asks for a used-buffer notification; returns true when used buffers are already pending.
    mutating func enableUsedNotifications() -> Bool
    /// Asks for a notification after about 3/4 of the buffers in flight; true when that many are already used.
    mutating func enableUsedNotificationsDelayed() -> Bool
    /// Where the driver stands (next available, next used, wrap counters).
    var position: RingPosition { get }
}

// The requirements do not throw: Swift 6.3 leaves a generic caller's call to a requirement of
// another module's conformance going through the witness table, unspecialised and not inlined,
// when the witness's body throws a typed error (measured: 2 indirect calls per turn in
// ring-bench's specialised loop; none once the requirement is non-throwing). The throwing API
// lives here, in an extension, which every caller (generic or concrete) inlines.
extension DriverRing where Self: ~Copyable {
    /// Makes a buffer of device-readable then device-writable elements available; returns its token.
    @inlinable @inline(__always)
    public mutating func add(readable: Span<BufferElement>, writable: Span<BufferElement>) throws(RingError) -> UInt16 {
        var failure: RingError?
        let token = add(readable: readable, writable: writable, failure: &failure)
        if let failure { throw failure }
        return token
    }

    /// Fast path for a one-element buffer.
    @inlinable @inline(__always)
    public mutating func add(_ element: BufferElement, deviceWritable: Bool) throws(RingError) -> UInt16 {
        var failure: RingError?
        let token = add(element, deviceWritable: deviceWritable, failure: &failure)
        if let failure { throw failure }
        return token
    }

    /// Next used buffer, or nil when the device has returned nothing new.
    @inlinable @inline(__always)
    public mutating func pollUsed() throws(RingError) -> UsedBuffer? {
        if let used = takeUsed() { return used }
        if let v = violation { throw .broken(v) }
        return nil
    }

    /// Burst add (see the requirement); throws only when nothing could be added for a failure.
    @inlinable @inline(__always)
    public mutating func addBurst(_ elements: Span<BufferElement>, deviceWritable: Bool,
                                  tokens: UnsafeMutablePointer<UInt16>) throws(RingError) -> Int {
        var failure: RingError?
        let n = addBurst(elements, deviceWritable: deviceWritable, tokens: tokens, failure: &failure)
        if let failure { throw failure }
        return n
    }

    /// Burst poll: up to `maximum` used buffers into `used`, in the order the device returned them.
    /// A rule the device broke after some were taken is thrown on the next call (the queue is broken).
    @inlinable @inline(__always)
    public mutating func pollUsed(into used: UnsafeMutablePointer<UsedBuffer>, maximum: Int) throws(RingError) -> Int {
        var n = 0
        while n < maximum, let u = takeUsed() {
            used[n] = u
            n &+= 1
        }
        if n == 0, let v = violation { throw .broken(v) }
        return n
    }

    /// Convenience for arrays (allocates nothing; the spans borrow the arrays).
    public mutating func add(readable: [BufferElement], writable: [BufferElement]) throws(RingError) -> UInt16 {
        try add(readable: readable.span, writable: writable.span)
    }
}

/// Sums a buffer's element lengths and checks the chain limits shared by both layouts.
@inlinable
func measureBuffer(readable: borrowing Span<BufferElement>, writable: borrowing Span<BufferElement>) throws(RingError) -> UInt32 {
    let total = readable.count + writable.count
    guard total > 0 else { throw .invalidBuffer("a buffer needs at least one element") }
    var readBytes: UInt64 = 0
    var writeBytes: UInt64 = 0
    for i in readable.indices { readBytes &+= UInt64(readable[i].length) }
    for i in writable.indices { writeBytes &+= UInt64(writable[i].length) }
    // Split: "the total length of a chain MUST NOT exceed 2^32"; the used length is a u32.
    guard readBytes &+ writeBytes <= 1 << 32, writeBytes <= UInt64(UInt32.max) else {
        throw .invalidBuffer("buffer totals more than 2^32 bytes")
    }
    return UInt32(truncatingIfNeeded: writeBytes)
}

/// Writes an indirect table for a buffer. Split tables chain with next = 1, 2, ...
/// (in-order requires it); packed tables are sequential and carry only WRITE.
@inlinable
func writeIndirectTable(_ table: UnsafeMutableRawPointer, readable: borrowing Span<BufferElement>,
                        writable: borrowing Span<BufferElement>, chained: Bool) {
    let total = readable.count + writable.count
    var k = 0
    while k < total {
        let isWritable = k >= readable.count
        let e = isWritable ? writable[k - readable.count] : readable[k]
        let d = table + k * 16
        d.storeLE(e.address, at: 0)
        d.storeLE(e.length, at: 8)
        var flags: UInt16 = isWritable ? DescriptorFlags.write : 0
        if chained {
            if k + 1 < total { flags |= DescriptorFlags.next }
            d.storeLE(flags, at: 12)
            d.storeLE(UInt16(truncatingIfNeeded: k + 1), at: 14)
        } else {
            d.storeLE(UInt16(0), at: 12)  // Buffer ID: reserved and ignored in a table
            d.storeLE(flags, at: 14)
        }
        k += 1
    }
}
