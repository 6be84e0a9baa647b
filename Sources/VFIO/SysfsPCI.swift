#if canImport(Glibc)
import Glibc
#endif

/// A PCI function as sysfs describes it (`/sys/bus/pci/devices/DDDD:BB:DD.F`). The root is a
/// parameter so tests can build a fake tree.
public struct SysfsPCI: Sendable {
    public let root: String
    public init(root: String = "/sys") { self.root = root }

    func devicePath(_ address: String) -> String { "\(root)/bus/pci/devices/\(address)" }

    public func exists(_ address: String) -> Bool { access(devicePath(address), F_OK) == 0 }

    /// What a symlink points at, or nil.
    func linkPath(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The name a symlink points at (its last path component), or nil.
    func linkTarget(_ path: String) -> String? {
        linkPath(path)?.split(separator: "/").last.map(String.init)
    }

    /// Drivers vfio accepts on the other members of a group (vfio_dev_driver_allowed and bridges).
    static let groupFriendlyDrivers: Set<String> = ["vfio-pci", "pci-stub", "pcieport"]

    /// The driver bound to `address` (e.g. `virtio-pci`, `vfio-pci`), or nil.
    public func driver(_ address: String) -> String? { linkTarget(devicePath(address) + "/driver") }

    /// The IOMMU group number, or nil when the kernel has no IOMMU for it.
    public func iommuGroup(_ address: String) -> String? { linkTarget(devicePath(address) + "/iommu_group") }

    /// Every function in IOMMU group `group`.
    public func groupMembers(_ group: String) -> [String] {
        list("\(root)/kernel/iommu_groups/\(group)/devices")
    }

    /// A sysfs attribute, trimmed.
    public func attribute(_ address: String, _ name: String) -> String? {
        read(devicePath(address) + "/" + name)
    }

    /// A hex attribute such as `vendor` (`0x1af4`).
    public func hexAttribute(_ address: String, _ name: String) -> UInt32? {
        guard let s = attribute(address, name) else { return nil }
        return UInt32(s.hasPrefix("0x") ? String(s.dropFirst(2)) : s, radix: 16)
    }

    /// All PCI functions.
    public func allDevices() -> [String] { list("\(root)/bus/pci/devices").sorted() }

    func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.read(fd, &buffer, buffer.count)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).trimmingWhitespace()
    }

    /// Writes `value` to a sysfs file; nil on success, else errno.
    func write(_ path: String, _ value: String, create: Bool = false) -> Int32? {
        let fd = create ? open(path, O_WRONLY | O_CLOEXEC | O_CREAT | O_TRUNC, 0o644) : open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        return Glibc.write(fd, bytes, bytes.count) == bytes.count ? nil : errno
    }

    func list(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}

extension SysfsPCI {
    func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}
