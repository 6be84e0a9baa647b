import VirtioCore

/// A net queue's own counters (DPDK's per-queue xstats): frames and bytes moved (bytes exclude
/// the virtio header, as `ibytes`/`obytes` do), frames dropped, device errors, buffers re-posted.
@frozen
public struct NetQueueStats: Sendable, Equatable, Codable {
    public var packets: UInt64 = 0
    public var bytes: UInt64 = 0
    /// Receive: frames thrown away (runts, bad headers, incomplete merges). Transmit: frames not accepted (ring full).
    public var drops: UInt64 = 0
    /// Frames the device returned in a way the spec forbids (each also a drop or a broken queue).
    public var errors: UInt64 = 0
    /// Receive buffers made available again.
    public var refills: UInt64 = 0
    public init() {}

    public static func + (a: Self, b: Self) -> Self {
        var s = a
        s.packets &+= b.packets; s.bytes &+= b.bytes; s.drops &+= b.drops; s.errors &+= b.errors; s.refills &+= b.refills
        return s
    }
}

/// One received frame, lent by the queue until its next `receive` (the buffer is then posted again).
@frozen
public struct NetRxFrame {
    /// The first (often only) segment of the frame, after the virtio header.
    public let first: UnsafeMutableRawBufferPointer
    /// All segments together.
    public let length: Int
    /// Buffers the frame spans (1 unless mergeable buffers were needed).
    public let segments: Int
    /// Header flags the driver may use: NEEDS_CSUM / DATA_VALID (only with GUEST_CSUM; else 0).
    public let flags: UInt8
    public let checksumStart: UInt16
    public let checksumOffset: UInt16
    @usableFromInline let firstSegment: Int

    @inlinable
    init(first: UnsafeMutableRawBufferPointer, length: Int, segments: Int, flags: UInt8, checksumStart: UInt16,
         checksumOffset: UInt16, firstSegment: Int) {
        self.first = first
        self.length = length
        self.segments = segments
        self.flags = flags
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.firstSegment = firstSegment
    }

    /// True when the whole frame is in `first`.
    @inlinable public var isContiguous: Bool { segments == 1 }
}

/// Room for one receive burst: frames and the extra segments of merged frames. Made by the queue
/// (`NetRxQueue.makeBurst`), reused for every burst: receiving allocates nothing.
public struct NetRxBurst: ~Copyable {
    public let capacity: Int
    /// Frames in the burst.
    @inlinable public var count: Int { filled }
    @usableFromInline var filled = 0
    @usableFromInline let frames: UnsafeMutablePointer<NetRxFrame>
    /// Segments 2... of merged frames.
    @usableFromInline let extra: UnsafeMutablePointer<UnsafeMutableRawBufferPointer>
    @usableFromInline let extraCapacity: Int
    @usableFromInline var extraCount = 0

    init(capacity: Int, mergeLimit: Int) {
        self.capacity = max(1, capacity)
        frames = .allocate(capacity: self.capacity)
        extraCapacity = self.capacity + mergeLimit
        extra = .allocate(capacity: extraCapacity)
    }

    deinit {
        frames.deallocate()
        extra.deallocate()
    }

    @inlinable
    public subscript(i: Int) -> NetRxFrame {
        precondition(i >= 0 && i < count, "frame \(i) of a burst of \(count)")
        return frames[i]
    }

    /// Segment `k` (0 = `first`) of frame `i`.
    @inlinable
    public func segment(_ k: Int, of i: Int) -> UnsafeMutableRawBufferPointer {
        let f = self[i]
        precondition(k >= 0 && k < f.segments, "segment \(k) of a frame of \(f.segments)")
        return k == 0 ? f.first : extra[f.firstSegment + k - 1]
    }

    /// Copies frame `i` into `to` (up to its size); returns the bytes copied.
    @inlinable
    public func copy(_ i: Int, to: UnsafeMutableRawBufferPointer) -> Int {
        var done = 0
        let f = self[i]
        for k in 0..<f.segments where done < to.count {
            let s = segment(k, of: i)
            let n = min(s.count, to.count - done)
            to.baseAddress!.advanced(by: done).copyMemory(from: s.baseAddress!, byteCount: n)
            done += n
        }
        return done
    }
}
