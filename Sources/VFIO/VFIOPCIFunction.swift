import CShim
import SystemPackage
import Synchronization
import VirtioPCI
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// A PCI function owned through kernel VFIO: config space and BARs through the device fd
/// (BARs mmapped when VFIO allows the whole BAR), DMA memory mapped into its IOMMU domain,
/// MSI-X through eventfds. Teardown releases interrupts, mappings and fds.
public final class VFIOPCIFunction: PCIFunction, @unchecked Sendable {
    public let address: String
    /// Where the DMA mappings live: the group's container, or the cdev's iommufd IOAS.
    public let context: any VFIODMAContext
    /// The VFIO device, owned here and closed once at teardown.
    public let device: FileDescriptor
    /// Its raw number for ioctl(2) and pread/pwrite.
    public var deviceFD: Int32 { device.rawValue }
    public let memory: VFIODMAMemory
    /// Whether VFIO_DEVICE_RESET is available.
    public let canReset: Bool
    struct Region {
        let offset: off_t
        let size: Int
        let mapped: UnsafeMutableRawPointer?
        /// What `mapped` backs (all of the BAR, or the areas of a sparse mapping).
        var mappedRanges: [Range<Int>] = []
    }
    private let regions: [Int: Region]
    private let configRegion: Region
    private let barIsMemory: [Bool]
    private let irqFDs = Mutex<EventFDSet?>(nil)

    /// Opens `address` (bound to vfio-pci) and maps `dmaBytes` of DMA memory. `backend` .auto takes
    /// the device cdev with iommufd when the kernel has both, else the group and its container.
    public init(address: String, sysfs: SysfsPCI = SysfsPCI(), allowNoIOMMU: Bool = false,
                dmaBytes: Int = 64 << 20, backend: VFIOBackend = .auto) throws(VFIOError) {
        self.address = address
        let useCdev = switch backend {
        case .iommufd: true
        case .group: false
        case .auto: Glibc.access("/dev/iommu", F_OK) == 0 && sysfs.vfioCdev(address) != nil
        }
        let fd: Int32
        if useCdev {
            let (ctx, dev) = try IOMMUFDContext.open(address: address, sysfs: sysfs)
            context = ctx
            fd = dev.rawValue
        } else {
            let container = try VFIOContainer(address: address, sysfs: sysfs, allowNoIOMMU: allowNoIOMMU)
            context = container
            fd = address.withCString { ioctl(container.groupFD, CSHIM_VFIO_GROUP_GET_DEVICE_FD, UnsafeMutableRawPointer(mutating: $0)) }
            guard fd >= 0 else { throw .system("VFIO_GROUP_GET_DEVICE_FD \(address)", errno: errno) }
        }
        device = FileDescriptor(rawValue: fd)
        var info = vfio_device_info()
        info.argsz = UInt32(MemoryLayout<vfio_device_info>.size)
        guard ioctl(fd, CSHIM_VFIO_DEVICE_GET_INFO, &info) == 0 else {
            let e = errno
            close(fd)
            throw .system("VFIO_DEVICE_GET_INFO", errno: e)
        }
        canReset = info.flags & UInt32(VFIO_DEVICE_FLAGS_RESET) != 0
        // Start from a clean function whatever the previous owner left (DPDK does the same).
        if canReset { _ = ioctl(fd, CSHIM_VFIO_DEVICE_RESET) }
        var regions: [Int: Region] = [:]
        var config: Region?
        for index in [0, 1, 2, 3, 4, 5, Int(VFIO_PCI_CONFIG_REGION_INDEX)] where index < Int(info.num_regions) {
            guard let r = Self.regionInfo(fd, index: index), r.size > 0 else { continue }
            var region = Region(offset: r.offset, size: r.size, mapped: nil)
            if index <= 5, r.mmap { region = Self.map(fd, region, sparse: r.sparse) }
            if index == Int(VFIO_PCI_CONFIG_REGION_INDEX) { config = region } else { regions[index] = region }
        }
        guard let config else {
            close(fd)
            throw .unsupported("\(address): VFIO exposes no PCI config region")
        }
        self.regions = regions
        configRegion = config
        do {
            memory = try VFIODMAMemory(container: context, bytes: dmaBytes)
        } catch {
            for r in regions.values { if let m = r.mapped { munmap(m, r.size) } }
            close(fd)
            throw error
        }
        // Memory BARs have bit 0 of the BAR register clear.
        var kinds: [Bool] = []
        for i in 0..<6 {
            var v: UInt32 = 0
            let n = pread(fd, &v, 4, config.offset + off_t(PCIConfig.bar0 + 4 * i))
            kinds.append(n == 4 && v & 1 == 0)
        }
        barIsMemory = kinds
    }

    deinit {
        disableInterrupts()
        // The virtio driver reset the device already; a function-level reset also clears what
        // it could not (as DPDK does on release), so the next owner starts clean.
        if canReset { _ = ioctl(deviceFD, CSHIM_VFIO_DEVICE_RESET) }
        for r in regions.values { if let m = r.mapped { munmap(m, r.size) } }
        try? device.close()
    }

    /// VFIO_DEVICE_GET_REGION_INFO with its capability chain: mmap allowed, and the sparse areas
    /// when VFIO allows only parts of the region (nil: all of it).
    static func regionInfo(_ fd: Int32, index: Int) -> (offset: off_t, size: Int, mmap: Bool, sparse: [Range<Int>]?)? {
        let size = 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        // struct vfio_region_info { u32 argsz, flags, index, cap_offset; u64 size, offset; }
        buffer.storeBytes(of: UInt32(size), toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt32(index), toByteOffset: 8, as: UInt32.self)
        guard ioctl(fd, CSHIM_VFIO_DEVICE_GET_REGION_INFO, buffer) == 0 else { return nil }
        let flags = buffer.load(fromByteOffset: 4, as: UInt32.self)
        let regionSize = Int(buffer.load(fromByteOffset: 16, as: UInt64.self))
        let offset = off_t(Int64(bitPattern: buffer.load(fromByteOffset: 24, as: UInt64.self)))
        var sparse: [Range<Int>]?
        var mappable = flags & UInt32(VFIO_REGION_INFO_FLAG_MMAP) != 0
        var cap = flags & UInt32(VFIO_REGION_INFO_FLAG_CAPS) != 0 ? Int(buffer.load(fromByteOffset: 12, as: UInt32.self)) : 0
        var hops = 0
        // struct vfio_info_cap_header { u16 id, version; u32 next; }
        while cap >= 32, cap + 16 <= size, hops < 16 {
            hops += 1
            let id = buffer.loadUnaligned(fromByteOffset: cap, as: UInt16.self)
            if id == UInt16(VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
                // { header; u32 nr_areas, reserved; struct { u64 offset, size; } areas[]; }
                let n = Int(buffer.loadUnaligned(fromByteOffset: cap + 8, as: UInt32.self))
                var areas: [Range<Int>] = []
                for i in 0..<n where cap + 16 + (i + 1) * 16 <= size {
                    let o = Int(buffer.loadUnaligned(fromByteOffset: cap + 16 + i * 16, as: UInt64.self))
                    let s = Int(buffer.loadUnaligned(fromByteOffset: cap + 24 + i * 16, as: UInt64.self))
                    if s > 0, o >= 0, o <= regionSize - s { areas.append(o..<o + s) }
                }
                sparse = areas
                if areas.isEmpty { mappable = false }
            }
            cap = Int(buffer.loadUnaligned(fromByteOffset: cap + 4, as: UInt32.self))
        }
        return (offset, regionSize, mappable, sparse)
    }

    /// Maps a BAR: whole, or each sparse area at its place inside a reservation of the BAR's size
    /// (the holes stay PROT_NONE and are reached through pread/pwrite).
    static func map(_ fd: Int32, _ r: Region, sparse: [Range<Int>]?) -> Region {
        guard let areas = sparse else {
            let p = mmap(nil, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, r.offset)
            guard let p, p != MAP_FAILED else { return r }
            return Region(offset: r.offset, size: r.size, mapped: p, mappedRanges: [0..<r.size])
        }
        let reserve = mmap(nil, r.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let reserve, reserve != MAP_FAILED else { return r }
        var mappedAreas: [Range<Int>] = []
        for a in areas {
            let p = mmap(reserve + a.lowerBound, a.count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, r.offset + off_t(a.lowerBound))
            if let p, p != MAP_FAILED { mappedAreas.append(a) }
        }
        guard !mappedAreas.isEmpty else {
            munmap(reserve, r.size)
            return r
        }
        return Region(offset: r.offset, size: r.size, mapped: reserve, mappedRanges: mappedAreas)
    }

    public var backendDetails: [(String, String)] {
        var out: [(String, String)] = [
            ("vfio_iommu", context.summary),
            ("vfio_reset", canReset ? "VFIO_DEVICE_RESET (at open and close)" : "not offered"),
            ("dma_memory", "\(memory.size >> 20) MiB, " + (memory.hugepages ? "2 MiB hugepages" : "4 KiB pages")),
        ]
        for index in regions.keys.sorted() {
            let r = regions[index]!
            let how: String
            if r.mapped == nil {
                how = "read/write calls"
            } else if r.mappedRanges == [0..<r.size] {
                how = "mmap"
            } else {
                how = "sparse mmap " + r.mappedRanges.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16))" }
                    .joined(separator: ",") + ", the rest through calls"
            }
            out.append(("bar\(index)", "\(r.size) bytes, \(how)"))
        }
        return out
    }

    /// VFIO_DEVICE_RESET (function-level reset) when the device offers it.
    public func reset() throws(VFIOError) {
        guard canReset else { throw .unsupported("\(address) offers no VFIO_DEVICE_RESET") }
        guard ioctl(deviceFD, CSHIM_VFIO_DEVICE_RESET) == 0 else { throw .system("VFIO_DEVICE_RESET", errno: errno) }
    }

    // MARK: PCIFunction

    public var dma: any DMAAllocator { memory }

    public func bar(_ index: Int) -> BARInfo? {
        guard let r = regions[index], index < 6 else { return nil }
        return BARInfo(size: r.size, isMemory: barIsMemory[index], mapped: r.mapped, mappedRanges: r.mappedRanges)
    }

    private func access(_ r: Region, what: String, offset: Int, width: Int, write value: UInt64?) throws(PCIError) -> UInt64 {
        guard width == 1 || width == 2 || width == 4 || width == 8 else { throw .badWidth(width) }
        guard offset >= 0, offset + width <= r.size else {
            throw .outOfRange(what: what, offset: offset, width: width, limit: r.size)
        }
        var v = value ?? 0
        let n = value == nil ? pread(deviceFD, &v, width, r.offset + off_t(offset))
                             : pwrite(deviceFD, &v, width, r.offset + off_t(offset))
        guard n == width else { throw .io("\(address): \(what) \(value == nil ? "read" : "write") at 0x\(String(offset, radix: 16)): \(String(cString: strerror(errno)))") }
        if width < 8 { v &= (1 << UInt64(8 * width)) - 1 }
        return v
    }

    public func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 {
        UInt32(truncatingIfNeeded: try access(configRegion, what: "config space", offset: offset, width: width, write: nil))
    }

    public func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {
        _ = try access(configRegion, what: "config space", offset: offset, width: width, write: UInt64(value))
    }

    public func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        guard let r = regions[index] else { throw .noSuchBAR(index) }
        return try access(r, what: "BAR \(index)", offset: offset, width: width, write: nil)
    }

    public func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) {
        guard let r = regions[index] else { throw .noSuchBAR(index) }
        _ = try access(r, what: "BAR \(index)", offset: offset, width: width, write: value)
    }

    public func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] {
        disableInterrupts()
        let fds = try EventFDSet.vectors(vectors)
        let rc = fds.raw.withUnsafeBufferPointer {
            cshim_vfio_set_irq_eventfds(deviceFD, UInt32(VFIO_PCI_MSIX_IRQ_INDEX), 0, UInt32(vectors), $0.baseAddress)
        }
        guard rc == 0 else {
            fds.close()
            throw .io("\(address): VFIO_DEVICE_SET_IRQS (MSI-X, \(vectors) vectors): \(String(cString: strerror(-rc)))")
        }
        irqFDs.withLock { $0 = fds }
        return fds.raw
    }

    public func disableInterrupts() {
        let fds = irqFDs.withLock { fds -> EventFDSet? in
            defer { fds = nil }
            return fds
        }
        guard let fds else { return }
        // VFIO lets go of the eventfds first; then they are closed.
        _ = cshim_vfio_set_irq_eventfds(deviceFD, UInt32(VFIO_PCI_MSIX_IRQ_INDEX), 0, 0, nil)
        fds.close()
    }
}
