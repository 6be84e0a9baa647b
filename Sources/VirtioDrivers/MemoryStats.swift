import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// virtio-balloon statistics tags (`struct virtio_balloon_stat`, device-types/balloon).
public enum BalloonStatTag {
    public static let swapIn: UInt16 = 0, swapOut: UInt16 = 1, majorFaults: UInt16 = 2, minorFaults: UInt16 = 3,
                      freeMemory: UInt16 = 4, totalMemory: UInt16 = 5, availableMemory: UInt16 = 6,
                      diskCaches: UInt16 = 7, hugetlbAllocations: UInt16 = 8, hugetlbFailures: UInt16 = 9

    public static func name(_ t: UInt16) -> String {
        ["swap_in", "swap_out", "major_faults", "minor_faults", "free_memory", "total_memory", "available_memory",
         "disk_caches", "hugetlb_allocations", "hugetlb_failures"][safe: Int(t)] ?? "tag_\(t)"
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

/// This system's memory statistics as the balloon reports them, from /proc/meminfo and
/// /proc/vmstat, computed the way Linux's virtio_balloon `update_balloon_stats` does:
/// swap in/out in bytes (pages × page size), faults as counts (minor = all − major), memory in bytes,
/// disk caches = Cached + Buffers + SwapCached (Linux: NR_FILE_PAGES).
public enum MemoryStats {
    /// `key value` lines to a table (meminfo values are kB).
    static func table(_ path: String) -> [String: UInt64] {
        guard let f = fopen(path, "r") else { return [:] }
        defer { fclose(f) }
        var out: [String: UInt64] = [:]
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, Int32(line.count), f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let parts = s.split(whereSeparator: { $0 == " " || $0 == ":" || $0 == "\n" })
            if parts.count >= 2, let v = UInt64(parts[1]) { out[String(parts[0])] = v }
        }
        return out
    }

    public static func current() -> [StatEntry] {
        let mem = table("/proc/meminfo"), vm = table("/proc/vmstat")
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        func kB(_ k: String) -> UInt64 { (mem[k] ?? 0) * 1024 }
        let faults = vm["pgfault"] ?? 0, major = vm["pgmajfault"] ?? 0
        return [
            StatEntry(tag: BalloonStatTag.swapIn, value: (vm["pswpin"] ?? 0) * page),
            StatEntry(tag: BalloonStatTag.swapOut, value: (vm["pswpout"] ?? 0) * page),
            StatEntry(tag: BalloonStatTag.majorFaults, value: major),
            StatEntry(tag: BalloonStatTag.minorFaults, value: faults >= major ? faults - major : 0),
            StatEntry(tag: BalloonStatTag.freeMemory, value: kB("MemFree")),
            StatEntry(tag: BalloonStatTag.totalMemory, value: kB("MemTotal")),
            StatEntry(tag: BalloonStatTag.availableMemory, value: kB("MemAvailable")),
            StatEntry(tag: BalloonStatTag.diskCaches, value: kB("Cached") + kB("Buffers") + kB("SwapCached")),
            StatEntry(tag: BalloonStatTag.hugetlbAllocations, value: vm["htlb_buddy_alloc_success"] ?? 0),
            StatEntry(tag: BalloonStatTag.hugetlbFailures, value: vm["htlb_buddy_alloc_fail"] ?? 0),
        ]
    }
}
