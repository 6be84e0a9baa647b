import CShim
import Synchronization
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// DMA memory for one VFIO container: one block mapped once (hugepages when the system has
/// them, else pinned 4 KiB pages), IOVA-mapped through type1, handed out by a bump allocator.
public final class VFIODMAMemory: DMAAllocator, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let iova: UInt64
    public let hugepages: Bool
    let container: VFIOContainer
    private let next = Mutex<Int>(0)

    public init(container: VFIOContainer, bytes: Int) throws(VFIOError) {
        guard !container.noIOMMU else {
            throw .unsupported("no-IOMMU DMA memory (physical addresses from /proc/self/pagemap) is not in this build yet")
        }
        self.container = container
        let huge = 2 << 20
        let rounded = (bytes + huge - 1) / huge * huge
        // type1 pins the pages and charges them to RLIMIT_MEMLOCK; root may raise its own limit.
        var rl = rlimit()
        let resource = __rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue)
        getrlimit(resource, &rl)
        if rl.rlim_cur != rlim_t.max && Int(rl.rlim_cur) < rounded {
            var raised = rl
            raised.rlim_cur = rlim_t.max
            raised.rlim_max = rlim_t.max
            if setrlimit(resource, &raised) != 0 { throw .memlock(needed: rounded, limit: Int(rl.rlim_cur)) }
        }
        var p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0)
        var usedHuge = true
        if p == MAP_FAILED || p == nil {
            usedHuge = false
            p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
        }
        guard let p, p != MAP_FAILED else { throw .system("mmap of \(rounded) bytes of DMA memory", errno: errno) }
        // IOVA: the first reported range with room, 2 MiB aligned, never page 0.
        var chosen: UInt64?
        for r in container.iovaRanges {
            let start = (max(r.lowerBound, 0x10_0000) + UInt64(huge - 1)) & ~UInt64(huge - 1)
            if start <= r.upperBound, r.upperBound - start + 1 >= UInt64(rounded) { chosen = start; break }
        }
        guard let chosen else {
            munmap(p, rounded)
            throw .unsupported("no IOVA range of \(rounded) bytes in \(container.iovaRanges)")
        }
        var map = vfio_iommu_type1_dma_map()
        map.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_map>.size)
        map.flags = UInt32(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)
        map.vaddr = UInt64(UInt(bitPattern: p))
        map.iova = chosen
        map.size = UInt64(rounded)
        guard ioctl(container.fd, CSHIM_VFIO_IOMMU_MAP_DMA, &map) == 0 else {
            let e = errno
            munmap(p, rounded)
            if e == ENOMEM { throw .memlock(needed: rounded, limit: Int(rl.rlim_cur)) }
            throw .system("VFIO_IOMMU_MAP_DMA of \(rounded) bytes at IOVA 0x\(String(chosen, radix: 16))", errno: e)
        }
        base = p
        size = rounded
        iova = chosen
        hugepages = usedHuge
    }

    deinit {
        var unmap = vfio_iommu_type1_dma_unmap()
        unmap.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_unmap>.size)
        unmap.iova = iova
        unmap.size = UInt64(size)
        _ = ioctl(container.fd, CSHIM_VFIO_IOMMU_UNMAP_DMA, &unmap)
        munmap(base, size)
    }

    public func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        let offset = try bumpAllocate(next, size: size, length: length, alignment: alignment)
        let p = base + offset
        p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        return DMARegion(pointer: p, deviceAddress: iova + UInt64(offset), length: length)
    }
}
