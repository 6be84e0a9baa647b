import VirtioCore
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

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
