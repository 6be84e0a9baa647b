/// Why a PCI function could not be opened through VFIO; each case says what to do.
public enum VFIOError: Error, Sendable, Equatable, CustomStringConvertible {
    case noSuchDevice(String)
    case notBoundToVFIO(device: String, driver: String?)
    case noIOMMUGroup(String)
    case groupNotViable(group: String, blockers: [String])
    case noIOMMU(device: String)
    case notRoot(String)
    case memlock(needed: Int, limit: Int)
    case system(String, errno: Int32)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .noSuchDevice(d):
            "\(d): no such PCI device (see `virtioctl list`)"
        case let .notBoundToVFIO(d, drv):
            "\(d) is bound to \(drv ?? "no driver"), not vfio-pci; run `virtioctl bind \(d)` first"
        case let .noIOMMUGroup(d):
            "\(d) has no IOMMU group: the kernel runs without an IOMMU; boot with intel_iommu=on (or amd_iommu=on), or use `virtioctl bind \(d) --noiommu` (unsafe: no DMA isolation)"
        case let .groupNotViable(g, blockers):
            "IOMMU group \(g) is not viable: " + blockers.joined(separator: ", ")
                + "; bind every device of the group to vfio-pci (or unbind it) first"
        case let .noIOMMU(d):
            "\(d) is bound for no-IOMMU mode (/dev/vfio/noiommu-*), which gives no DMA isolation; pass --noiommu to accept that"
        case let .notRoot(what):
            "\(what): permission denied; run as root (or give this user the VFIO group device)"
        case let .memlock(needed, limit):
            "RLIMIT_MEMLOCK is \(limit / 1024) KiB but DMA memory needs \(needed / 1024) KiB pinned; raise it (`ulimit -l unlimited`, or run as root) or ask for less with --dma"
        case let .system(what, e):
            "\(what): \(String(cString: strerror(e)))"
        case let .unsupported(why):
            why
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
