#if canImport(Glibc)
import Glibc
#endif

/// What `bind` did.
public struct BindResult: Sendable, Equatable, Codable {
    public let address: String
    public let previousDriver: String?
    public let alreadyBound: Bool
    public let noIOMMU: Bool
    public let iommuGroup: String?
    /// The group device a driver opens: `/dev/vfio/N` or `/dev/vfio/noiommu-N`.
    public let groupDevice: String?
    /// Other members of the group not bound to vfio-pci (the group is not viable until they are).
    public let blockers: [String]
}

/// What `unbind` did.
public struct UnbindResult: Sendable, Equatable, Codable {
    public let address: String
    public let driver: String?
}

/// Binds a PCI function to vfio-pci and back, the way driverctl and dpdk-devbind do:
/// `driver_override` + unbind + `drivers_probe`. The driver a function had is recorded under
/// `stateDirectory` so that `unbind` restores it (and only it) afterwards.
public struct PCIBinding: Sendable {
    public let sysfs: SysfsPCI
    public let stateDirectory: String
    /// Whether to run `modprobe` for missing modules (only against the real /sys).
    public let loadModules: Bool

    public init(sysfs: SysfsPCI = SysfsPCI(), stateDirectory: String = "/run/virtioctl/bind", loadModules: Bool? = nil) {
        self.sysfs = sysfs
        self.stateDirectory = stateDirectory
        self.loadModules = loadModules ?? (sysfs.root == "/sys")
    }

    var devices: String { sysfs.root + "/bus/pci/devices" }
    var noIOMMUParameter: String { sysfs.root + "/module/vfio/parameters/enable_unsafe_noiommu_mode" }

    /// Checks `address` is a virtio function we may touch, and that we are root.
    func checkTarget(_ address: String, verb: String) throws(VFIOError) {
        guard sysfs.exists(address) else { throw .noSuchDevice(address) }
        let vendor = sysfs.hexAttribute(address, "vendor"), device = sysfs.hexAttribute(address, "device")
        guard vendor == 0x1AF4, let device, (0x1000...0x107F).contains(device) else {
            let id = "\(hexPadded(vendor ?? 0, 4)):\(hexPadded(device ?? 0, 4))"
            throw .unsupported("\(address) [\(id)] is not a virtio function; virtioctl \(verb) only handles virtio devices (vendor 1af4, device 1000-107f)")
        }
        guard geteuid() == 0 else { throw .notRoot("\(verb) \(address) writes to sysfs") }
    }

    /// Binds `address` to vfio-pci. Without an IOMMU this needs `noIOMMU` (and a kernel whose vfio
    /// has no-IOMMU mode); with one, `noIOMMU` is ignored. A function the kernel is using (a
    /// mounted or swapped-on disk, a disk under device-mapper or md, a network interface that is
    /// up) is refused unless `force`: taking it away would pull it from under its users.
    public func bind(_ address: String, noIOMMU: Bool, force: Bool = false) throws(VFIOError) -> BindResult {
        try checkTarget(address, verb: "bind")
        let previous = sysfs.driver(address)
        if previous != "vfio-pci", !force {
            let users = kernelUsers(address)
            guard users.isEmpty else {
                throw .unsupported("\(address) is in use: " + users.joined(separator: "; ") + "; stop using it first (or --force)")
            }
        }
        if previous != "vfio-pci" {
            if !sysfs.isDirectory(sysfs.root + "/bus/pci/drivers/vfio-pci") { try modprobe("vfio-pci") }
            guard sysfs.isDirectory(sysfs.root + "/bus/pci/drivers/vfio-pci") else {
                throw .unsupported("the vfio-pci driver is not available (modprobe vfio-pci failed or the kernel lacks CONFIG_VFIO_PCI)")
            }
        }
        let hasIOMMU = sysfs.iommuGroup(address).map { !isNoIOMMUGroup($0) } ?? false
        if !hasIOMMU {
            guard noIOMMU else { throw .noIOMMUGroup(address) }
            guard access(noIOMMUParameter, F_OK) == 0 else {
                throw .unsupported("this kernel's vfio module has no no-IOMMU mode (CONFIG_VFIO_NOIOMMU is not set; Debian builds it without): boot with an IOMMU, or load a vfio.ko built with it")
            }
            if sysfs.read(noIOMMUParameter) != "Y" {
                if let e = sysfs.write(noIOMMUParameter, "1") { throw writeError(noIOMMUParameter, e) }
            }
        }
        if previous == "vfio-pci" {
            return result(address, previous: previous, alreadyBound: true, noIOMMU: !hasIOMMU)
        }
        try record(address, previous: previous)
        let dir = devices + "/" + address
        if let e = sysfs.write(dir + "/driver_override", "vfio-pci") { throw writeError(dir + "/driver_override", e) }
        if previous != nil, let e = sysfs.write(dir + "/driver/unbind", address) {
            _ = sysfs.write(dir + "/driver_override", "\n")
            unlink(stateFile(address))
            throw writeError(dir + "/driver/unbind", e)
        }
        _ = sysfs.write(sysfs.root + "/bus/pci/drivers_probe", address)
        guard sysfs.driver(address) == "vfio-pci" else {
            _ = sysfs.write(dir + "/driver_override", "\n")
            _ = sysfs.write(sysfs.root + "/bus/pci/drivers_probe", address)
            unlink(stateFile(address))
            throw .unsupported("\(address): vfio-pci did not take the device (see dmesg); it is now bound to \(sysfs.driver(address) ?? "no driver")")
        }
        return result(address, previous: previous, alreadyBound: false, noIOMMU: !hasIOMMU)
    }

    /// Unbinds `address` from vfio-pci and gives it back to the driver it had before `bind`
    /// (or, with no record, to whatever driver the kernel picks).
    public func unbind(_ address: String) throws(VFIOError) -> UnbindResult {
        try checkTarget(address, verb: "unbind")
        let current = sysfs.driver(address)
        guard current == "vfio-pci" else {
            throw .unsupported("\(address) is bound to \(current ?? "no driver"), not vfio-pci; nothing to unbind")
        }
        if let group = sysfs.iommuGroup(address) {
            let holders = processesHolding(groupDevice(group))
            guard holders.isEmpty else {
                // vfio-pci's remove blocks until every user lets go; refuse rather than hang.
                throw .unsupported("\(address) is in use by " + holders.joined(separator: ", ") + "; stop it first")
            }
        }
        let recorded = recordedDriver(address)
        let dir = devices + "/" + address
        // Clear the override so the kernel may match its own driver again, then probe.
        if let e = sysfs.write(dir + "/driver_override", "\n") { throw writeError(dir + "/driver_override", e) }
        if let e = sysfs.write(dir + "/driver/unbind", address) { throw writeError(dir + "/driver/unbind", e) }
        _ = sysfs.write(sysfs.root + "/bus/pci/drivers_probe", address)
        if case let .some(wanted) = recorded {
            let now = sysfs.driver(address)
            if let wanted, now != wanted {
                if now != nil { _ = sysfs.write(dir + "/driver/unbind", address) }
                _ = sysfs.write(sysfs.root + "/bus/pci/drivers/\(wanted)/bind", address)
            } else if wanted == nil, now != nil {
                _ = sysfs.write(dir + "/driver/unbind", address)  // it had no driver before
            }
        }
        unlink(stateFile(address))
        return UnbindResult(address: address, driver: sysfs.driver(address))
    }

    /// What on this system uses the function through its kernel driver.
    func kernelUsers(_ address: String) -> [String] {
        let proc = sysfs.root == "/sys" ? "/proc" : sysfs.root + "/proc"
        let dir = devices + "/" + address
        var disks: [(name: String, dev: String, dir: String)] = []
        var users: [String] = []
        for child in sysfs.list(dir) where child.hasPrefix("virtio") {
            for disk in sysfs.list("\(dir)/\(child)/block") {
                let d = "\(dir)/\(child)/block/\(disk)"
                if let dev = sysfs.read(d + "/dev") { disks.append((disk, dev, d)) }
                for part in sysfs.list(d) where part.hasPrefix(disk) {
                    if let dev = sysfs.read("\(d)/\(part)/dev") { disks.append((part, dev, "\(d)/\(part)")) }
                }
            }
            for interface in sysfs.list("\(dir)/\(child)/net") {
                let flags = sysfs.read("\(dir)/\(child)/net/\(interface)/flags").flatMap { UInt32($0.dropFirst(2), radix: 16) } ?? 0
                if flags & 1 != 0 { users.append("network interface \(interface) is up") }
            }
        }
        guard !disks.isEmpty else { return users }
        // mountinfo: "id parent major:minor root mountpoint ..."
        let mounts = (sysfs.read(proc + "/self/mountinfo") ?? "").split(separator: "\n").map { $0.split(separator: " ") }
        let swaps = (sysfs.read(proc + "/swaps") ?? "").split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first }
        for disk in disks {
            for m in mounts where m.count > 4 && m[2] == disk.dev { users.append("/dev/\(disk.name) is mounted at \(m[4])") }
            if swaps.contains(where: { $0 == "/dev/\(disk.name)" }) { users.append("/dev/\(disk.name) is a swap area") }
            let holders = sysfs.list(disk.dir + "/holders")
            if !holders.isEmpty { users.append("/dev/\(disk.name) is held by " + holders.sorted().joined(separator: ", ")) }
        }
        return users
    }

    func result(_ address: String, previous: String?, alreadyBound: Bool, noIOMMU: Bool) -> BindResult {
        let group = sysfs.iommuGroup(address)
        let blockers = group.map { g in
            sysfs.groupMembers(g).sorted().filter { $0 != address }.compactMap { m -> String? in
                guard let d = sysfs.driver(m), !SysfsPCI.groupFriendlyDrivers.contains(d) else { return nil }
                return "\(m) (\(d))"
            }
        } ?? []
        return BindResult(address: address, previousDriver: alreadyBound ? recordedDriver(address) ?? nil : previous,
                          alreadyBound: alreadyBound, noIOMMU: noIOMMU, iommuGroup: group,
                          groupDevice: group.map(groupDevice), blockers: blockers)
    }

    /// `/dev/vfio/N`, or `/dev/vfio/noiommu-N` for a no-IOMMU group.
    func groupDevice(_ group: String) -> String {
        let plain = sysfs.root == "/sys" ? "/dev/vfio/\(group)" : "\(sysfs.root)/dev/vfio/\(group)"
        let unsafe = sysfs.root == "/sys" ? "/dev/vfio/noiommu-\(group)" : "\(sysfs.root)/dev/vfio/noiommu-\(group)"
        return access(plain, F_OK) != 0 && access(unsafe, F_OK) == 0 ? unsafe : plain
    }

    /// A no-IOMMU group is one vfio made up itself: the kernel names it `vfio-noiommu`.
    func isNoIOMMUGroup(_ group: String) -> Bool {
        sysfs.read(sysfs.root + "/kernel/iommu_groups/\(group)/name") == "vfio-noiommu"
    }

    // MARK: the record of the previous driver

    func stateFile(_ address: String) -> String { stateDirectory + "/" + address }

    func record(_ address: String, previous: String?) throws(VFIOError) {
        var path = ""
        for part in stateDirectory.split(separator: "/") {
            path += "/" + part
            mkdir(path, 0o755)
        }
        // Called only when the function is not on vfio-pci: any older record is stale.
        if let e = sysfs.write(stateFile(address), previous ?? "", create: true) { throw writeError(stateFile(address), e) }
    }

    /// The driver recorded at bind time: nil = no record, .some(nil) = it had no driver.
    func recordedDriver(_ address: String) -> String?? {
        guard let s = sysfs.read(stateFile(address)) else { return nil }
        return .some(s.isEmpty ? nil : s)
    }

    func writeError(_ path: String, _ e: Int32) -> VFIOError {
        e == EACCES || e == EPERM ? .notRoot("write \(path)") : .system("write \(path)", errno: e)
    }

    func modprobe(_ module: String) throws(VFIOError) {
        guard loadModules else { return }
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("modprobe"), strdup(module), nil]
        defer { for a in argv { free(a) } }
        let rc = posix_spawnp(&pid, "modprobe", nil, nil, argv, environ)
        guard rc == 0 else { throw .system("spawn modprobe \(module)", errno: rc) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Processes with `path` open, as "pid N (comm)".
    func processesHolding(_ path: String) -> [String] {
        guard sysfs.root == "/sys" else { return [] }
        var out: [String] = []
        for pid in sysfs.list("/proc") where pid.allSatisfy(\.isNumber) {
            for fd in sysfs.list("/proc/\(pid)/fd") where sysfs.linkPath("/proc/\(pid)/fd/\(fd)") == path {
                out.append("pid \(pid) (\(sysfs.read("/proc/\(pid)/comm") ?? "?"))")
                break
            }
        }
        return out
    }
}
