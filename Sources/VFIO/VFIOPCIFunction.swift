import CShim
import Synchronization
import VirtioPCI
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// A PCI function owned through kernel VFIO: config space and BARs through the device fd
/// (BARs mmapped when VFIO allows the whole BAR), DMA memory mapped into its IOMMU domain,
/// MSI-X through eventfds. Teardown releases interrupts, mappings and fds.
public final class VFIOPCIFunction: PCIFunction, @unchecked Sendable {
    public let address: String
    public let container: VFIOContainer
    public let deviceFD: Int32
    public let memory: VFIODMAMemory
    /// Whether VFIO_DEVICE_RESET is available.
    public let canReset: Bool
    struct Region {
        let offset: off_t
        let size: Int
        let mapped: UnsafeMutableRawPointer?
    }
    private let regions: [Int: Region]
    private let configRegion: Region
    private let barIsMemory: [Bool]
    private let irqFDs = Mutex<[Int32]>([])

    /// Opens `address` (bound to vfio-pci) and maps `dmaBytes` of DMA memory.
    public init(address: String, sysfs: SysfsPCI = SysfsPCI(), allowNoIOMMU: Bool = false,
                dmaBytes: Int = 64 << 20) throws(VFIOError) {
        self.address = address
        let container = try VFIOContainer(address: address, sysfs: sysfs, allowNoIOMMU: allowNoIOMMU)
        self.container = container
        let fd = address.withCString { ioctl(container.groupFD, CSHIM_VFIO_GROUP_GET_DEVICE_FD, UnsafeMutableRawPointer(mutating: $0)) }
        guard fd >= 0 else { throw .system("VFIO_GROUP_GET_DEVICE_FD \(address)", errno: errno) }
        deviceFD = fd
        var info = vfio_device_info()
        info.argsz = UInt32(MemoryLayout<vfio_device_info>.size)
        guard ioctl(fd, CSHIM_VFIO_DEVICE_GET_INFO, &info) == 0 else {
            let e = errno
            close(fd)
            throw .system("VFIO_DEVICE_GET_INFO", errno: e)
        }
        canReset = info.flags & UInt32(VFIO_DEVICE_FLAGS_RESET) != 0
        var regions: [Int: Region] = [:]
        var config: Region?
        for index in [0, 1, 2, 3, 4, 5, Int(VFIO_PCI_CONFIG_REGION_INDEX)] where index < Int(info.num_regions) {
            var r = vfio_region_info()
            r.argsz = UInt32(MemoryLayout<vfio_region_info>.size)
            r.index = UInt32(index)
            guard ioctl(fd, CSHIM_VFIO_DEVICE_GET_REGION_INFO, &r) == 0, r.size > 0 else { continue }
            var mapped: UnsafeMutableRawPointer?
            // Map a BAR only when VFIO allows the whole of it (a sparse-mmap capability, as for the
            // MSI-X table's BAR, means holes: that BAR is reached through read/write instead).
            let mappable = r.flags & UInt32(VFIO_REGION_INFO_FLAG_MMAP) != 0 && r.flags & UInt32(VFIO_REGION_INFO_FLAG_CAPS) == 0
            if index <= 5, mappable {
                let p = mmap(nil, Int(r.size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(r.offset))
                if let p, p != MAP_FAILED { mapped = p }
            }
            let region = Region(offset: off_t(r.offset), size: Int(r.size), mapped: mapped)
            if index == Int(VFIO_PCI_CONFIG_REGION_INDEX) { config = region } else { regions[index] = region }
        }
        guard let config else {
            close(fd)
            throw .unsupported("\(address): VFIO exposes no PCI config region")
        }
        self.regions = regions
        configRegion = config
        do {
            memory = try VFIODMAMemory(container: container, bytes: dmaBytes)
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
        for r in regions.values { if let m = r.mapped { munmap(m, r.size) } }
        close(deviceFD)
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
        return BARInfo(size: r.size, isMemory: barIsMemory[index], mapped: r.mapped)
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
        let fds = try makeInterruptEventFDs(vectors)
        let rc = fds.withUnsafeBufferPointer {
            cshim_vfio_set_irq_eventfds(deviceFD, UInt32(VFIO_PCI_MSIX_IRQ_INDEX), 0, UInt32(vectors), $0.baseAddress)
        }
        guard rc == 0 else {
            for f in fds { close(f) }
            throw .io("\(address): VFIO_DEVICE_SET_IRQS (MSI-X, \(vectors) vectors): \(String(cString: strerror(-rc)))")
        }
        irqFDs.withLock { $0 = fds }
        return fds
    }

    public func disableInterrupts() {
        let fds = irqFDs.withLock { fds -> [Int32] in
            defer { fds = [] }
            return fds
        }
        guard !fds.isEmpty else { return }
        _ = cshim_vfio_set_irq_eventfds(deviceFD, UInt32(VFIO_PCI_MSIX_IRQ_INDEX), 0, 0, nil)
        for f in fds { close(f) }
    }
}
