/// Log-linear latency histogram (32 sub-buckets per power of two, ~3% resolution) over a fixed
/// array: recording allocates nothing.
public struct LatencyHistogram: ~Copyable {
    public static let buckets = 2048
    @usableFromInline let counts: UnsafeMutablePointer<UInt64>
    public var total: UInt64 = 0
    public var sum: UInt64 = 0
    public var minimum = UInt64.max
    public var maximum: UInt64 = 0

    public init() {
        counts = .allocate(capacity: Self.buckets)
        counts.initialize(repeating: 0, count: Self.buckets)
    }
    deinit { counts.deallocate() }

    @inlinable @inline(__always)
    static func index(_ v: UInt64) -> Int {
        if v < 64 { return Int(v) }
        let msb = 63 - v.leadingZeroBitCount
        let shift = msb - 5
        return 64 + (shift - 1) * 32 + Int(v >> UInt64(shift)) - 32
    }

    /// The smallest value that lands in bucket `i`.
    public static func lowerBound(_ i: Int) -> UInt64 {
        if i < 64 { return UInt64(i) }
        let shift = (i - 64) / 32 + 1
        let mantissa = UInt64((i - 64) % 32 + 32)
        return mantissa << UInt64(shift)
    }

    @inlinable @inline(__always)
    public mutating func record(_ v: UInt64) {
        counts[Self.index(v)] &+= 1
        total &+= 1
        sum &+= v
        if v < minimum { minimum = v }
        if v > maximum { maximum = v }
    }

    public mutating func merge(_ other: borrowing LatencyHistogram) {
        for i in 0..<Self.buckets { counts[i] &+= other.counts[i] }
        total &+= other.total
        sum &+= other.sum
        minimum = Swift.min(minimum, other.minimum)
        maximum = Swift.max(maximum, other.maximum)
    }

    /// The value at quantile `q` (0...1): the midpoint of the bucket holding it.
    public func percentile(_ q: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let rank = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for i in 0..<Self.buckets {
            seen &+= counts[i]
            if seen >= max(rank, 1) {
                let lo = Self.lowerBound(i), hi = i + 1 < Self.buckets ? Self.lowerBound(i + 1) : lo
                return Swift.min(Swift.max((lo + hi) / 2, minimum), maximum)
            }
        }
        return maximum
    }

    public var mean: Double { total == 0 ? 0 : Double(sum) / Double(total) }
}
