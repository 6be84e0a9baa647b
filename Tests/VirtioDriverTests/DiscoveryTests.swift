import Foundation
import Testing
@testable import VFIO

/// A fake sysfs tree: PCI functions with vendor/device files, driver and IOMMU-group links.
final class FakeSysfs {
    let root: String
    init() throws {
        root = NSTemporaryDirectory() + "fake-sysfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try mkdir("bus/pci/devices")
        try mkdir("bus/pci/drivers/virtio-pci")
        try mkdir("bus/pci/drivers/vfio-pci")
        try write("bus/pci/drivers_probe", "")
    }
    deinit { try? FileManager.default.removeItem(atPath: root) }

    func mkdir(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true)
    }
    func write(_ path: String, _ text: String) throws {
        try text.write(toFile: root + "/" + path, atomically: false, encoding: .utf8)
    }
    /// A relative link, as sysfs has (libpci resolves links relative to the device directory).
    func link(_ path: String, to target: String) throws {
        let up = String(repeating: "../", count: path.split(separator: "/").count - 1)
        try FileManager.default.createSymbolicLink(atPath: root + "/" + path, withDestinationPath: up + target)
    }

    /// Adds a function; `group` nil means no IOMMU.
    func add(_ address: String, vendor: UInt16, device: UInt16, driver: String?, group: String?) throws {
        let d = "bus/pci/devices/\(address)"
        try mkdir(d)
        try write(d + "/vendor", String(format: "0x%04x\n", vendor))
        try write(d + "/device", String(format: "0x%04x\n", device))
        try write(d + "/subsystem_vendor", String(format: "0x%04x\n", vendor))
        try write(d + "/subsystem_device", String(format: "0x%04x\n", device))
        try write(d + "/class", "0x010000\n")
        try write(d + "/driver_override", "(null)\n")
        if let driver { try link(d + "/driver", to: "bus/pci/drivers/\(driver)") }
        if let group {
            try mkdir("kernel/iommu_groups/\(group)/devices")
            try link(d + "/iommu_group", to: "kernel/iommu_groups/\(group)")
            try link("kernel/iommu_groups/\(group)/devices/\(address)", to: d)
        }
    }
}

@Suite(.leakChecked) struct DiscoveryTests {
    @Test func listsOnlyVirtioFunctionsWithTypeDriverGroupAndName() throws {
        let fs = try FakeSysfs()
        try fs.add("0000:00:04.0", vendor: 0x1AF4, device: 0x1042, driver: "vfio-pci", group: "7")
        try fs.add("0000:00:05.0", vendor: 0x1AF4, device: 0x1001, driver: "virtio-pci", group: nil)
        try fs.add("0000:00:06.0", vendor: 0x8086, device: 0x100E, driver: nil, group: "8")
        try fs.add("0000:01:00.0", vendor: 0x1AF4, device: 0x1045, driver: nil, group: "9")
        let found = try PCIDiscovery.virtioFunctions(sysfsRoot: fs.root)
        #expect(found.map(\.address) == ["0000:00:04.0", "0000:00:05.0", "0000:01:00.0"])
        #expect(found.map(\.type) == ["blk", "blk", "balloon"])
        #expect(found.map(\.transitional) == [false, true, false])
        #expect(found.map(\.driver) == ["vfio-pci", "virtio-pci", nil])
        #expect(found.map(\.iommuGroup) == ["7", nil, "9"])
        if FileManager.default.fileExists(atPath: "/usr/share/misc/pci.ids") {
            #expect(found[0].name == "Virtio 1.0 block device")  // pci.ids, through libpci
        }
    }

    /// The cdev is named only when its `dev` attribute exists (a no-IOMMU device has the sysfs
    /// entry but no node), and opening it on a kernel without /dev/iommu says what is missing.
    @Test func vfioCdevIsListedOnlyWithItsDevAttribute() throws {
        let fs = try FakeSysfs()
        try fs.add("0000:00:04.0", vendor: 0x1AF4, device: 0x1042, driver: "vfio-pci", group: "3")
        try fs.add("0000:00:05.0", vendor: 0x1AF4, device: 0x1042, driver: "vfio-pci", group: nil)
        try fs.add("0000:00:06.0", vendor: 0x1AF4, device: 0x1042, driver: "virtio-pci", group: "4")
        try fs.mkdir("bus/pci/devices/0000:00:04.0/vfio-dev/vfio0")
        try fs.write("bus/pci/devices/0000:00:04.0/vfio-dev/vfio0/dev", "253:0\n")
        try fs.mkdir("bus/pci/devices/0000:00:05.0/vfio-dev/vfio1")  // no-IOMMU: no dev attribute
        let found = try PCIDiscovery.virtioFunctions(sysfsRoot: fs.root)
        #expect(found.map(\.vfioCdev) == ["vfio0", nil, nil])
        let sysfs = SysfsPCI(root: fs.root)
        #expect(sysfs.vfioCdev("0000:00:04.0")! == ("vfio0", "253:0"))
        func openError(_ address: String) -> String {
            do { _ = try IOMMUFDContext.open(address: address, sysfs: sysfs); return "opened" } catch { return error.description }
        }
        #expect(openError("0000:00:06.0").contains("not vfio-pci; run `virtioctl bind"))
        if access("/dev/iommu", F_OK) != 0 {
            #expect(openError("0000:00:04.0").contains("/dev/iommu does not exist"), "\(openError("0000:00:04.0"))")
        } else {
            #expect(openError("0000:00:05.0").contains("has no VFIO device cdev"))
        }
        #expect(deviceNumber(dev_t(253 << 8 | 7)) == "253:7" && deviceNumber(dev_t(0x1000) << 32 | dev_t(0x12300) << 12 | 0x45) == "4096:74565")
    }

    @Test func missingBusIsAnErrorNotAnExit() {
        #expect(throws: VFIOError.self) { try PCIDiscovery.virtioFunctions(sysfsRoot: "/nonexistent") }
    }
}

/// bind/unbind refuse what they must, before writing anything.
@Suite(.leakChecked) struct BindingRefusalTests {
    func binding(_ fs: FakeSysfs) -> PCIBinding {
        PCIBinding(sysfs: SysfsPCI(root: fs.root), stateDirectory: fs.root + "/state", loadModules: false)
    }

    func overrideUntouched(_ fs: FakeSysfs, _ address: String) throws -> Bool {
        try String(contentsOfFile: fs.root + "/bus/pci/devices/\(address)/driver_override", encoding: .utf8) == "(null)\n"
    }

    @Test func nonVirtioFunctionIsRefused() throws {
        let fs = try FakeSysfs()
        try fs.add("0000:00:06.0", vendor: 0x8086, device: 0x100E, driver: "e1000", group: "8")
        #expect { try binding(fs).bind("0000:00:06.0", noIOMMU: false) } throws: {
            "\($0)".contains("8086:100e] is not a virtio function")
        }
        #expect(try overrideUntouched(fs, "0000:00:06.0"))
    }

    @Test func noIOMMUNeedsTheFlagAndAKernelThatHasIt() throws {
        guard geteuid() == 0 else { return }  // the root check comes first otherwise
        let fs = try FakeSysfs()
        try fs.add("0000:00:04.0", vendor: 0x1AF4, device: 0x1042, driver: "virtio-pci", group: nil)
        #expect { try binding(fs).bind("0000:00:04.0", noIOMMU: false) } throws: {
            "\($0)".contains("has no IOMMU group") && "\($0)".contains("--noiommu")
        }
        #expect { try binding(fs).bind("0000:00:04.0", noIOMMU: true) } throws: {
            "\($0)".contains("CONFIG_VFIO_NOIOMMU")
        }
        #expect(try overrideUntouched(fs, "0000:00:04.0"))
    }

    @Test func unbindOfAFunctionNotOnVFIOIsRefused() throws {
        guard geteuid() == 0 else { return }
        let fs = try FakeSysfs()
        try fs.add("0000:00:04.0", vendor: 0x1AF4, device: 0x1042, driver: "virtio-pci", group: "3")
        #expect { try binding(fs).unbind("0000:00:04.0") } throws: {
            "\($0)".contains("bound to virtio-pci, not vfio-pci")
        }
    }

    @Test func aDiskInUseIsRefusedWithItsUsersNamed() throws {
        guard geteuid() == 0 else { return }
        let fs = try FakeSysfs()
        try fs.add("0000:00:02.0", vendor: 0x1AF4, device: 0x1042, driver: "virtio-pci", group: "1")
        let disk = "bus/pci/devices/0000:00:02.0/virtio0/block/vda"
        try fs.mkdir(disk + "/vda1/holders")
        try fs.mkdir(disk + "/vda2/holders")
        try fs.mkdir(disk + "/holders")
        try fs.write(disk + "/dev", "254:0\n")
        try fs.write(disk + "/vda1/dev", "254:1\n")
        try fs.write(disk + "/vda2/dev", "254:2\n")
        try fs.mkdir("proc/self")
        try fs.write("proc/self/mountinfo", "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n")
        try fs.write("proc/swaps", "Filename Type Size Used Priority\n/dev/vda2 partition 1024 0 -2\n")
        #expect { try binding(fs).bind("0000:00:02.0", noIOMMU: false) } throws: {
            "\($0)".contains("/dev/vda1 is mounted at /") && "\($0)".contains("/dev/vda2 is a swap area") && "\($0)".contains("--force")
        }
        #expect(try overrideUntouched(fs, "0000:00:02.0"))
    }

    @Test func unknownAddressIsNamed() throws {
        let fs = try FakeSysfs()
        #expect(throws: VFIOError.noSuchDevice("0000:00:09.0")) { try binding(fs).bind("0000:00:09.0", noIOMMU: false) }
    }

    @Test func alreadyBoundReportsTheGroupAndItsBlockers() throws {
        guard geteuid() == 0 else { return }
        let fs = try FakeSysfs()
        try fs.add("0000:00:04.0", vendor: 0x1AF4, device: 0x1042, driver: "vfio-pci", group: "3")
        try fs.add("0000:00:04.1", vendor: 0x1AF4, device: 0x1041, driver: "virtio-pci", group: "3")
        let r = try binding(fs).bind("0000:00:04.0", noIOMMU: false)
        #expect(r.alreadyBound && r.iommuGroup == "3" && !r.noIOMMU)
        #expect(r.blockers == ["0000:00:04.1 (virtio-pci)"])
    }
}
