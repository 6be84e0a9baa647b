import CShim
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Where a VFIO device's DMA mappings live: a type1 container (or no-IOMMU), or an iommufd IO
/// address space. `VFIODMAMemory` maps through it; nothing here is on a data path.
public protocol VFIODMAContext: AnyObject, Sendable {
    /// DMA addresses are physical (no IOMMU translates them).
    var noIOMMU: Bool { get }
    /// The IOVA ranges a mapping may use (inclusive).
    var iovaRanges: [ClosedRange<UInt64>] { get }
    /// Maps `bytes` at `p` to `iova`, readable and writable by the device.
    func map(_ p: UnsafeMutableRawPointer, bytes: Int, iova: UInt64) throws(VFIOError)
    /// Undoes `map` (teardown: errors are not actionable there).
    func unmap(iova: UInt64, bytes: Int)
    /// What `info` prints as `vfio_iommu`.
    var summary: String { get }
}

/// Which kernel interface opens the device: the group/container API, iommufd with the device
/// cdev, or whichever the kernel offers (the cdev when it exists).
public enum VFIOBackend: String, Sendable, CaseIterable {
    case auto, group, iommufd
}

/// An iommufd context (`/dev/iommu`) with one IO address space, and the VFIO device cdev
/// (`/dev/vfio/devices/vfioN`) bound to it and attached to that IOAS
/// (shared/reference/iommufd.md section 2: ALLOC, open, BIND, ATTACH, then IOVA_RANGES).
public final class IOMMUFDContext: VFIODMAContext, @unchecked Sendable {
    public let iommufd: FileDescriptor
    public let ioas: UInt32
    /// The device cdev's name (`vfio0`) and its object id inside this iommufd.
    public let cdev: String
    public let deviceID: UInt32
    /// The hardware page table the kernel attached (for `info`).
    public let pageTable: UInt32
    public let iovaRanges: [ClosedRange<UInt64>]
    public let iovaAlignment: UInt64
    public var noIOMMU: Bool { false }

    /// Opens `/dev/iommu`, allocates an IOAS and binds `address`'s cdev to it; returns the
    /// context and the bound device fd (closing that fd unbinds).
    public static func open(address: String, sysfs: SysfsPCI) throws(VFIOError) -> (IOMMUFDContext, FileDescriptor) {
        guard sysfs.exists(address) else { throw .noSuchDevice(address) }
        let driver = sysfs.driver(address)
        guard driver == "vfio-pci" else { throw .notBoundToVFIO(device: address, driver: driver) }
        guard access("/dev/iommu", F_OK) == 0 else {
            throw .unsupported("--vfio iommufd: /dev/iommu does not exist: this kernel has no iommufd (CONFIG_IOMMUFD, Linux 6.2+; "
                + "Debian's kernels leave it off), or its module is not loaded (`modprobe iommufd`); use --vfio group")
        }
        guard let node = sysfs.vfioCdev(address) else {
            throw .unsupported("--vfio iommufd: \(address) has no VFIO device cdev (\(sysfs.root)/bus/pci/devices/\(address)/vfio-dev/vfioN/dev): "
                + "the kernel lacks CONFIG_VFIO_DEVICE_CDEV, or the device is in no-IOMMU mode, which has no cdev in Linux 6.12; use --vfio group")
        }
        let path = "/dev/vfio/devices/\(node.name)"
        let (ifd, dfd) = try VFIOContainer.openBoth("/dev/iommu", path)
        func fail(_ err: VFIOError) -> VFIOError {
            close(dfd)
            close(ifd)
            return err
        }
        // The node is the device sysfs names: N is a per-boot index, so compare major:minor too.
        var st = stat()
        guard fstat(dfd, &st) == 0, deviceNumber(st.st_rdev) == node.dev else {
            throw fail(.unsupported("\(path) is not \(address)'s cdev (sysfs says \(node.dev)): a stale /dev node?"))
        }
        var alloc = cshim_iommu_ioas_alloc(size: 12, flags: 0, out_ioas_id: 0)
        guard ioctl(ifd, CSHIM_IOMMU_IOAS_ALLOC, &alloc) == 0 else { throw fail(.system("IOMMU_IOAS_ALLOC", errno: errno)) }
        var bind = cshim_vfio_device_bind_iommufd(argsz: 16, flags: 0, iommufd: ifd, out_devid: 0)
        guard ioctl(dfd, CSHIM_VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0 else {
            let e = errno
            let group = sysfs.iommuGroup(address) ?? "?"
            switch e {
            case EBUSY: throw fail(.system("VFIO_DEVICE_BIND_IOMMUFD \(address): its group /dev/vfio/\(group) is open (another process uses the group API)", errno: e))
            case EPERM: throw fail(.system("VFIO_DEVICE_BIND_IOMMUFD \(address): another iommufd or a kernel driver owns a device of IOMMU group \(group), "
                + "or interrupts are not remapped (iommufd.allow_unsafe_interrupts=1 accepts that)", errno: e))
            case EINVAL: throw fail(.system("VFIO_DEVICE_BIND_IOMMUFD \(address): the cdev is bound already (another process holds \(path))", errno: e))
            default: throw fail(.system("VFIO_DEVICE_BIND_IOMMUFD \(address)", errno: e))
            }
        }
        var attach = cshim_vfio_device_attach_iommufd_pt(argsz: 12, flags: 0, pt_id: alloc.out_ioas_id)
        guard ioctl(dfd, CSHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0 else {
            throw fail(.system("VFIO_DEVICE_ATTACH_IOMMUFD_PT \(address) to IOAS \(alloc.out_ioas_id)", errno: errno))
        }
        // The real limits (reserved MSI window, address width) appear only after the attach.
        let ranges: ([ClosedRange<UInt64>], UInt64)
        do { ranges = try iovaRanges(ifd, ioas: alloc.out_ioas_id) } catch { throw fail(error) }
        let context = IOMMUFDContext(iommufd: FileDescriptor(rawValue: ifd), ioas: alloc.out_ioas_id, cdev: node.name,
                                     deviceID: bind.out_devid, pageTable: attach.pt_id, ranges: ranges)
        return (context, FileDescriptor(rawValue: dfd))
    }

    init(iommufd: FileDescriptor, ioas: UInt32, cdev: String, deviceID: UInt32, pageTable: UInt32,
         ranges: ([ClosedRange<UInt64>], UInt64)) {
        self.iommufd = iommufd
        self.ioas = ioas
        self.cdev = cdev
        self.deviceID = deviceID
        self.pageTable = pageTable
        (iovaRanges, iovaAlignment) = ranges
    }

    /// IOMMU_IOAS_IOVA_RANGES, growing the array when the kernel says EMSGSIZE.
    static func iovaRanges(_ ifd: Int32, ioas: UInt32) throws(VFIOError) -> ([ClosedRange<UInt64>], UInt64) {
        var capacity = 8
        for _ in 0..<4 {
            var buffer = [cshim_iommu_iova_range](repeating: cshim_iommu_iova_range(), count: capacity)
            var q = cshim_iommu_ioas_iova_ranges()
            let rc = buffer.withUnsafeMutableBufferPointer { b -> Int32 in
                q = cshim_iommu_ioas_iova_ranges(size: 32, ioas_id: ioas, num_iovas: UInt32(capacity), reserved: 0,
                                                 allowed_iovas: UInt64(UInt(bitPattern: b.baseAddress)), out_iova_alignment: 0)
                return ioctl(ifd, CSHIM_IOMMU_IOAS_IOVA_RANGES, &q)
            }
            if rc != 0, errno == EMSGSIZE, Int(q.num_iovas) > capacity, q.num_iovas <= 4096 {
                capacity = Int(q.num_iovas)
                continue
            }
            guard rc == 0 else { throw .system("IOMMU_IOAS_IOVA_RANGES", errno: errno) }
            let n = min(Int(q.num_iovas), capacity)
            let ranges = buffer[0..<n].compactMap { $0.start <= $0.last ? $0.start...$0.last : nil }
            return (ranges, max(q.out_iova_alignment, 4096))
        }
        throw .unsupported("IOMMU_IOAS_IOVA_RANGES: the range count kept growing")
    }

    public func map(_ p: UnsafeMutableRawPointer, bytes: Int, iova: UInt64) throws(VFIOError) {
        guard UInt64(bytes) % iovaAlignment == 0, iova % iovaAlignment == 0 else {
            throw .unsupported("IOMMU_IOAS_MAP: \(bytes) bytes at IOVA 0x\(String(iova, radix: 16)) is not a multiple of the IOAS's alignment 0x\(String(iovaAlignment, radix: 16))")
        }
        var m = cshim_iommu_ioas_map(size: 40, flags: CSHIM_IOMMU_IOAS_MAP_FIXED_IOVA | CSHIM_IOMMU_IOAS_MAP_READABLE | CSHIM_IOMMU_IOAS_MAP_WRITEABLE,
                                     ioas_id: ioas, reserved: 0, user_va: UInt64(UInt(bitPattern: p)), length: UInt64(bytes), iova: iova)
        guard ioctl(iommufd.rawValue, CSHIM_IOMMU_IOAS_MAP, &m) == 0 else {
            let e = errno
            if e == ENOMEM { throw VFIODMAMemory.pinError("IOMMU_IOAS_MAP", bytes: bytes, errno: e) }
            throw .system("IOMMU_IOAS_MAP of \(bytes) bytes at IOVA 0x\(String(iova, radix: 16))", errno: e)
        }
    }

    public func unmap(iova: UInt64, bytes: Int) {
        var u = cshim_iommu_ioas_unmap(size: 24, ioas_id: ioas, iova: iova, length: UInt64(bytes))
        _ = ioctl(iommufd.rawValue, CSHIM_IOMMU_IOAS_UNMAP, &u)
    }

    public var summary: String { "iommufd, cdev /dev/vfio/devices/\(cdev), IOAS \(ioas), hwpt \(pageTable)" }

    deinit {
        // The device fd (closed by its owner first) held a reference; this drops the IOAS with it.
        try? iommufd.close()
    }
}

/// `major:minor` of a dev_t, as sysfs prints it (glibc's major()/minor() are macros Swift does not import).
func deviceNumber(_ d: dev_t) -> String {
    let major = ((d >> 8) & 0xfff) | ((d >> 32) & 0xffff_f000)
    let minor = (d & 0xff) | ((d >> 12) & 0xffff_ff00)
    return "\(major):\(minor)"
}

extension SysfsPCI {
    /// The VFIO device cdev of a function bound to vfio-pci: `vfio-dev/` holds one `vfioN`, and it
    /// has a `dev` attribute (`major:minor`) only when a node exists (none in no-IOMMU mode).
    public func vfioCdev(_ address: String) -> (name: String, dev: String)? {
        let names = list(devicePath(address) + "/vfio-dev")
        guard names.count == 1, let dev = read(devicePath(address) + "/vfio-dev/\(names[0])/dev"), !dev.isEmpty else { return nil }
        return (names[0], dev)
    }
}
