import CShim
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A VFIO container holding one IOMMU group: the group is opened, checked for viability,
/// attached, and the IOMMU type set (type1v2, or no-IOMMU when the user allowed it).
public final class VFIOContainer: VFIODMAContext, @unchecked Sendable {
    /// The container and the group, owned here and closed once at teardown.
    public let container: FileDescriptor
    public let groupDescriptor: FileDescriptor
    /// Raw numbers for ioctl(2).
    public var fd: Int32 { container.rawValue }
    public var groupFD: Int32 { groupDescriptor.rawValue }
    public let group: String
    public let noIOMMU: Bool
    /// Usable IOVA ranges reported by VFIO_IOMMU_GET_INFO (type1 only).
    public let iovaRanges: [ClosedRange<UInt64>]

    /// Opens the group of `address` and sets up the container.
    public init(address: String, sysfs: SysfsPCI = SysfsPCI(), allowNoIOMMU: Bool) throws(VFIOError) {
        guard sysfs.exists(address) else { throw .noSuchDevice(address) }
        let driver = sysfs.driver(address)
        guard driver == "vfio-pci" else { throw .notBoundToVFIO(device: address, driver: driver) }
        guard let group = sysfs.iommuGroup(address) else { throw .noIOMMUGroup(address) }
        self.group = group
        let plain = "/dev/vfio/\(group)", unsafe = "/dev/vfio/noiommu-\(group)"
        let noIOMMU = access(plain, F_OK) != 0 && access(unsafe, F_OK) == 0
        if noIOMMU && !allowNoIOMMU { throw .noIOMMU(device: address) }
        self.noIOMMU = noIOMMU

        let groupPath = noIOMMU ? unsafe : plain
        let (container, g) = try Self.openBoth("/dev/vfio/vfio", groupPath)
        func fail(_ err: VFIOError) -> VFIOError {
            close(g)
            close(container)
            return err
        }
        guard ioctl(container, CSHIM_VFIO_GET_API_VERSION) == VFIO_API_VERSION else {
            throw fail(.unsupported("VFIO API version mismatch (want \(VFIO_API_VERSION))"))
        }
        var status = vfio_group_status()
        status.argsz = UInt32(MemoryLayout<vfio_group_status>.size)
        guard ioctl(g, CSHIM_VFIO_GROUP_GET_STATUS, &status) == 0 else {
            throw fail(.system("VFIO_GROUP_GET_STATUS on \(groupPath)", errno: errno))
        }
        guard status.flags & UInt32(VFIO_GROUP_FLAGS_VIABLE) != 0 else {
            // Name every member that is bound to a driver other than vfio-pci.
            let blockers = sysfs.groupMembers(group).sorted().compactMap { member -> String? in
                guard let d = sysfs.driver(member), !SysfsPCI.groupFriendlyDrivers.contains(d) else { return nil }
                return "\(member) is bound to \(d)"
            }
            throw fail(.groupNotViable(group: group, blockers: blockers.isEmpty ? ["a member is in use"] : blockers))
        }
        var cfd = container
        guard ioctl(g, CSHIM_VFIO_GROUP_SET_CONTAINER, &cfd) == 0 else {
            throw fail(.system("VFIO_GROUP_SET_CONTAINER", errno: errno))
        }
        let type: Int32
        if noIOMMU {
            type = VFIO_NOIOMMU_IOMMU
        } else if ioctl(container, CSHIM_VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0 {
            type = VFIO_TYPE1v2_IOMMU
        } else if ioctl(container, CSHIM_VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) > 0 {
            type = VFIO_TYPE1_IOMMU
        } else {
            throw fail(.unsupported("the VFIO container supports neither type1v2 nor type1 IOMMU"))
        }
        guard ioctl(container, CSHIM_VFIO_SET_IOMMU, type) == 0 else {
            throw fail(.system("VFIO_SET_IOMMU(\(type))", errno: errno))
        }
        self.container = FileDescriptor(rawValue: container)
        groupDescriptor = FileDescriptor(rawValue: g)
        iovaRanges = noIOMMU ? [] : Self.iovaRanges(container)
    }

    deinit {
        _ = ioctl(groupFD, CSHIM_VFIO_GROUP_UNSET_CONTAINER)
        try? groupDescriptor.close()
        try? container.close()
    }

    public func map(_ p: UnsafeMutableRawPointer, bytes: Int, iova: UInt64) throws(VFIOError) {
        var map = vfio_iommu_type1_dma_map()
        map.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_map>.size)
        map.flags = UInt32(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)
        map.vaddr = UInt64(UInt(bitPattern: p))
        map.iova = iova
        map.size = UInt64(bytes)
        guard ioctl(fd, CSHIM_VFIO_IOMMU_MAP_DMA, &map) == 0 else {
            let e = errno
            if e == ENOMEM { throw VFIODMAMemory.pinError("VFIO_IOMMU_MAP_DMA", bytes: bytes, errno: e) }
            throw .system("VFIO_IOMMU_MAP_DMA of \(bytes) bytes at IOVA 0x\(String(iova, radix: 16))", errno: e)
        }
    }

    public func unmap(iova: UInt64, bytes: Int) {
        var unmap = vfio_iommu_type1_dma_unmap()
        unmap.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_unmap>.size)
        unmap.iova = iova
        unmap.size = UInt64(bytes)
        _ = ioctl(fd, CSHIM_VFIO_IOMMU_UNMAP_DMA, &unmap)
    }

    public var summary: String { noIOMMU ? "none (no-IOMMU mode: physical addresses), group \(group)" : "type1, group \(group)" }

    /// Opens two nodes read-write, or neither (the first is closed when the second fails).
    static func openBoth(_ first: String, _ second: String) throws(VFIOError) -> (Int32, Int32) {
        let a = open(first, O_RDWR | O_CLOEXEC)
        guard a >= 0 else { throw openError(first, errno) }
        let b = open(second, O_RDWR | O_CLOEXEC)
        guard b >= 0 else {
            let e = errno
            close(a)
            throw openError(second, e)
        }
        return (a, b)
    }

    static func openError(_ path: String, _ e: Int32) -> VFIOError {
        switch e {
        case EACCES, EPERM: .notRoot("open \(path)")
        case ENOENT: .unsupported("\(path) does not exist: is the vfio-pci module loaded (`modprobe vfio-pci`)?")
        case EBUSY: .system("open \(path) (another process holds the group)", errno: e)
        default: .system("open \(path)", errno: e)
        }
    }

    /// VFIO_IOMMU_GET_INFO's IOVA-range capability; the whole 48-bit space minus page 0 when absent.
    static func iovaRanges(_ container: Int32) -> [ClosedRange<UInt64>] {
        let size = 4096
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        buffer.storeBytes(of: UInt32(size), as: UInt32.self)  // argsz
        guard ioctl(container, CSHIM_VFIO_IOMMU_GET_INFO, buffer) == 0 else { return [0x10_0000...0xFFFF_FFFF_FFFF] }
        // struct vfio_iommu_type1_info { u32 argsz, flags; u64 iova_pgsizes; u32 cap_offset, pad; }
        let flags = buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        var offset = Int(buffer.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        guard flags & UInt32(VFIO_IOMMU_INFO_CAPS) != 0 else { return [0x10_0000...0xFFFF_FFFF_FFFF] }
        var ranges: [ClosedRange<UInt64>] = []
        var hops = 0
        while offset != 0, offset + 16 <= size, hops < 32 {
            hops += 1
            let id = buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
            let next = Int(buffer.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
            if id == UInt16(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
                let n = Int(buffer.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
                for i in 0..<n where offset + 16 + (i + 1) * 16 <= size {
                    let start = buffer.loadUnaligned(fromByteOffset: offset + 16 + i * 16, as: UInt64.self)
                    let end = buffer.loadUnaligned(fromByteOffset: offset + 24 + i * 16, as: UInt64.self)
                    if start <= end { ranges.append(start...end) }
                }
            }
            offset = next
        }
        return ranges.isEmpty ? [0x10_0000...0xFFFF_FFFF_FFFF] : ranges
    }
}
