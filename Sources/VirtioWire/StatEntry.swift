/// defines it (`struct virtio_balloon_stat`) and seed 000's virtio-blk draft copies.
public struct StatEntry: Sendable, Equatable, Codable {
    public var tag: UInt16
    public var value: UInt64
    public init(tag: UInt16, value: UInt64) {
        self.tag = tag
        self.value = value
    }
    public static let size = 10

    public static func encode(_ entries: [StatEntry]) -> [UInt8] {
        var w = LEWriter()
        for e in entries {
            w.u16(e.tag)
            w.u64(e.value)
        }
        return w.out
    }

    /// Entries from a buffer; a trailing fragment shorter than 10 bytes is an error.
    public static func decode(_ b: [UInt8]) -> [StatEntry]? {
        guard b.count % size == 0 else { return nil }
        let r = LEReader(b)
        return (0..<(b.count / size)).map { StatEntry(tag: r.u16($0 * size), value: r.u64($0 * size + 2)) }
    }
}

/// virtio-balloon statistics tags (`struct virtio_balloon_stat`, device-types/balloon).
public enum BalloonStatTag {
    public static let swapIn: UInt16 = 0, swapOut: UInt16 = 1, majorFaults: UInt16 = 2, minorFaults: UInt16 = 3,
                      freeMemory: UInt16 = 4, totalMemory: UInt16 = 5, availableMemory: UInt16 = 6,
                      diskCaches: UInt16 = 7, hugetlbAllocations: UInt16 = 8, hugetlbFailures: UInt16 = 9

    public static func name(_ t: UInt16) -> String {
        let names = ["swap_in", "swap_out", "major_faults", "minor_faults", "free_memory", "total_memory",
                     "available_memory", "disk_caches", "hugetlb_allocations", "hugetlb_failures"]
        return Int(t) < names.count ? names[Int(t)] : "tag_\(t)"
    }
}
