import CShim
import Synchronization
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// DMA memory for one VFIO DMA context (a type1 container or an iommufd IOAS): one block mapped
/// once (hugepages when the system has them, else pinned 4 KiB pages), handed out by a bump allocator.
/// - type1: the block is IOVA-mapped once; device address = IOVA + offset.
/// - no-IOMMU: device addresses are physical, read from /proc/self/pagemap for every page; an
///   allocation must be physically contiguous, so it is placed where it is. Hugepages only:
///   mlock keeps 4 KiB pages resident but compaction may still move them, and the device would
///   then DMA into memory that is no longer ours (DPDK requires hugepages here too).
public final class VFIODMAMemory: DMAAllocator, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let hugepages: Bool
    /// The IOVA of `base` (type1), or nil in no-IOMMU mode.
    public let iova: UInt64?
    /// Physical address of each 4 KiB page (no-IOMMU mode only).
    let physicalPages: [UInt64]
    let container: any VFIODMAContext
    private let next = Mutex<Int>(0)
    static let page = 4096

    public init(container: any VFIODMAContext, bytes: Int) throws(VFIOError) {
        self.container = container
        let huge = 2 << 20
        let rounded = (bytes + huge - 1) / huge * huge
        // Pinned memory is charged to RLIMIT_MEMLOCK (type1 pins; no-IOMMU mlocks); root may raise its own limit.
        var rl = rlimit()
        let resource = __rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue)
        getrlimit(resource, &rl)
        if rl.rlim_cur != rlim_t.max && Int(rl.rlim_cur) < rounded {
            var raised = rl
            raised.rlim_cur = rlim_t.max
            raised.rlim_max = rlim_t.max
            if setrlimit(resource, &raised) != 0 { throw .memlock(needed: rounded, limit: Int(rl.rlim_cur)) }
        }
        // From here the limit is not what stops us: a failure to pin is memory (or hugepages) running out.
        var p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0)
        var usedHuge = true
        if p == MAP_FAILED || p == nil {
            guard !container.noIOMMU else {
                throw .unsupported("no-IOMMU DMA needs \(rounded >> 21) free 2 MiB hugepages (4 KiB pages can move under the device); "
                    + "reserve them: echo \(rounded >> 21) >> /proc/sys/vm/nr_hugepages (HugePages_Free in /proc/meminfo), or ask for less with --dma")
            }
            usedHuge = false
            p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
        }
        guard let p, p != MAP_FAILED else { throw .system("mmap of \(rounded) bytes of DMA memory", errno: errno) }
        hugepages = usedHuge
        base = p
        size = rounded
        if container.noIOMMU {
            // Nothing pins for us: lock the pages so they stay resident at the addresses we read.
            guard mlock(p, rounded) == 0 else {
                let e = errno
                munmap(p, rounded)
                throw .system("mlock of \(rounded >> 20) MiB of DMA memory", errno: e)
            }
            do { physicalPages = try Self.physicalAddresses(p, bytes: rounded) } catch {
                munmap(p, rounded)
                throw error
            }
            iova = nil
            return
        }
        physicalPages = []
        do { iova = try Self.mapIOVA(container, p, bytes: rounded, huge: huge) } catch {
            munmap(p, rounded)
            throw error
        }
    }

    /// Picks an IOVA in the first reported range with room (2 MiB aligned, never page 0) and maps.
    static func mapIOVA(_ container: any VFIODMAContext, _ p: UnsafeMutableRawPointer, bytes: Int, huge: Int) throws(VFIOError) -> UInt64 {
        var chosen: UInt64?
        for r in container.iovaRanges {
            let start = (max(r.lowerBound, 0x10_0000) + UInt64(huge - 1)) & ~UInt64(huge - 1)
            if start <= r.upperBound, r.upperBound - start + 1 >= UInt64(bytes) { chosen = start; break }
        }
        guard let chosen else { throw .unsupported("no IOVA range of \(bytes) bytes in \(container.iovaRanges)") }
        try container.map(p, bytes: bytes, iova: chosen)
        return chosen
    }

    /// Pinning failed for want of memory: say what the limit is and what to do.
    static func pinError(_ call: String, bytes: Int, errno e: Int32) -> VFIOError {
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &rl)
        let limit = rl.rlim_cur == rlim_t.max ? "unlimited, so memory ran out" : "\(rl.rlim_cur >> 10) KiB; other locked memory counts too"
        return .system("\(call) could not pin \(bytes >> 20) MiB (RLIMIT_MEMLOCK is \(limit)); ask for less with --dma", errno: e)
    }

    /// The physical address of every 4 KiB page of [p, p+bytes), from /proc/self/pagemap
    /// (bit 63 present, bits 0-54 the frame number; frame numbers read as 0 without CAP_SYS_ADMIN).
    static func physicalAddresses(_ p: UnsafeMutableRawPointer, bytes: Int) throws(VFIOError) -> [UInt64] {
        let fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system("open /proc/self/pagemap", errno: errno) }
        defer { close(fd) }
        let pages = bytes / page
        var entries = [UInt64](repeating: 0, count: pages)
        let offset = off_t(UInt(bitPattern: p) / UInt(page) * 8)
        let n = entries.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
        guard n == pages * 8 else { throw .system("read /proc/self/pagemap", errno: errno) }
        return try entries.map { (e: UInt64) throws(VFIOError) -> UInt64 in
            let frame = e & ((1 << 55) - 1)
            guard e >> 63 == 1, frame != 0 else {
                throw .unsupported("no-IOMMU DMA needs physical addresses, and /proc/self/pagemap shows none: it takes CAP_SYS_ADMIN (run as root)")
            }
            return frame * UInt64(page)
        }
    }

    deinit {
        if let iova { container.unmap(iova: iova, bytes: size) }
        munmap(base, size)
    }

    public func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        if let iova {
            let offset = try bumpAllocate(next, size: size, length: length, alignment: alignment)
            let p = base + offset
            p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            return DMARegion(pointer: p, deviceAddress: iova + UInt64(offset), length: length)
        }
        let offset = try contiguousAllocate(length: length, alignment: alignment)
        let p = base + offset
        p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        let physical = physicalPages[offset / Self.page] + UInt64(offset % Self.page)
        return DMARegion(pointer: p, deviceAddress: physical, length: length)
    }

    /// No-IOMMU: the first aligned offset past the cursor whose pages are physically
    /// contiguous (and aligned in physical address too) for `length` bytes.
    func contiguousAllocate(length: Int, alignment: Int) throws(DMAError) -> Int {
        guard length > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw .invalidRequest("length \(length) alignment \(alignment)")
        }
        let page = Self.page, pages = physicalPages
        let total = size
        let result: Result<Int, DMAError> = next.withLock { cursor in
            var start = (cursor + alignment - 1) & ~(alignment - 1)
            search: while start + length <= total {
                let first = start / page, last = (start + length - 1) / page
                let physicalStart = pages[first] + UInt64(start % page)
                if physicalStart & UInt64(alignment - 1) != 0 {
                    start = (first + 1) * page
                    start = (start + alignment - 1) & ~(alignment - 1)
                    continue
                }
                for i in first..<last where pages[i + 1] != pages[i] &+ UInt64(page) {
                    start = ((i + 1) * page + alignment - 1) & ~(alignment - 1)  // the run breaks: restart past it
                    continue search
                }
                cursor = start + length
                return .success(start)
            }
            return .failure(.exhausted(requested: length, available: 0))
        }
        do { return try result.get() } catch {
            throw .invalidRequest("no physically contiguous \(length) bytes left in the no-IOMMU DMA memory (2 MiB hugepages that happen not to be adjacent); ask for smaller buffers or more --dma")
        }
    }
}
