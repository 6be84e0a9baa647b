import CLibPCI
import VirtioCore
import VirtioPCI
import VirtioWire

/// One virtio PCI function as discovery sees it.
public struct VirtioPCIDeviceInfo: Sendable, Equatable, Codable {
    public let address: String
    public let vendorID: UInt16
    public let deviceID: UInt16
    public let subsystemID: UInt16
    /// The virtio device ID (2 = block, ...), from the PCI device ID.
    public let virtioDeviceID: UInt16?
    /// Short type name (`blk`, `net`, ...) or `type N`.
    public let type: String
    /// Whether the PCI device ID is a transitional one (0x1000-0x103f: also speaks legacy virtio).
    public let transitional: Bool
    public let driver: String?
    public let iommuGroup: String?
    /// The VFIO device cdev (`vfio0` for /dev/vfio/devices/vfio0) while bound to vfio-pci on a
    /// kernel with VFIO_DEVICE_CDEV; nil otherwise (and always in no-IOMMU mode).
    public let vfioCdev: String?
    /// pci.ids name of the device, when the database has one.
    public let name: String?
}

/// Finds virtio functions (vendor 0x1af4, device 0x1000-0x107f) with libpci.
public enum PCIDiscovery {
    public static let virtioVendor: UInt16 = 0x1AF4

    /// Every virtio function under `sysfsRoot` (`/sys`), sorted by address.
    public static func virtioFunctions(sysfsRoot: String = "/sys") throws(VFIOError) -> [VirtioPCIDeviceInfo] {
        let busPath = sysfsRoot + "/bus/pci"
        // libpci calls exit() when its back end cannot start; look first.
        let sysfs = SysfsPCI(root: sysfsRoot)
        guard sysfs.isDirectory(busPath + "/devices") else {
            throw .unsupported("\(busPath)/devices does not exist: no PCI bus visible (is sysfs mounted?)")
        }
        guard let access = busPath.withCString({ vpci_open($0) }) else { throw .unsupported("libpci: pci_alloc failed") }
        defer { pci_cleanup(access) }
        pci_scan_bus(access)
        var found: [VirtioPCIDeviceInfo] = []
        var cursor = access.pointee.devices
        while let dev = cursor {
            cursor = dev.pointee.next
            let fill = Int32(PCI_FILL_IDENT | PCI_FILL_SUBSYS | PCI_FILL_DRIVER | PCI_FILL_IOMMU_GROUP)
            _ = pci_fill_info(dev, fill)
            let d = dev.pointee
            guard d.vendor_id == virtioVendor, (0x1000...0x107F).contains(d.device_id) else { continue }
            let address = hexPadded(UInt32(bitPattern: d.domain), 4) + ":" + hexPadded(UInt32(d.bus), 2)
                + ":" + hexPadded(UInt32(d.dev), 2) + "." + String(d.func, radix: 16)
            let virtioID = VirtioPCIWire.deviceID(pciDeviceID: d.device_id)
            let type = virtioID.map { VirtioDeviceType(rawValue: $0)?.description ?? "type \($0)" } ?? "unknown"
            found.append(VirtioPCIDeviceInfo(
                address: address, vendorID: d.vendor_id, deviceID: d.device_id, subsystemID: d.subsys_id,
                virtioDeviceID: virtioID, type: type, transitional: d.device_id < 0x1040,
                driver: string(pci_get_string_property(dev, UInt32(PCI_FILL_DRIVER))).map(lastComponent),
                iommuGroup: string(pci_get_string_property(dev, UInt32(PCI_FILL_IOMMU_GROUP))),
                vfioCdev: sysfs.vfioCdev(address)?.name,
                name: lookupName(access, vendor: d.vendor_id, device: d.device_id)))
        }
        return found.sorted { $0.address < $1.address }
    }

    static func string(_ p: UnsafeMutablePointer<CChar>?) -> String? {
        guard let p else { return nil }
        let s = String(cString: p)
        return s.isEmpty ? nil : s
    }

    static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    static func lookupName(_ access: UnsafeMutablePointer<pci_access>, vendor: UInt16, device: UInt16) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        return buffer.withUnsafeMutableBufferPointer { b in
            string(UnsafeMutablePointer(mutating: vpci_device_name(access, b.baseAddress, Int32(b.count), UInt32(vendor), UInt32(device))))
        }
    }
}

/// Lower-case hex, zero-padded to `width` digits.
func hexPadded(_ value: UInt32, _ width: Int) -> String {
    let hex = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - hex.count)) + hex
}
