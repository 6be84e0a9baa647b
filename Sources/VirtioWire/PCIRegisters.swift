/// Standard configuration space offsets and bits (PCI Local Bus spec).
public enum PCIConfig {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revision = 0x08
    public static let classCode = 0x09
    public static let bar0 = 0x10
    public static let subsystemVendorID = 0x2C
    public static let subsystemID = 0x2E
    public static let capabilitiesPointer = 0x34

    public static let commandMemorySpace: UInt32 = 1 << 1
    public static let commandBusMaster: UInt32 = 1 << 2
    public static let statusCapabilityList: UInt32 = 1 << 4

    public static let capabilityVendor: UInt8 = 0x09
    public static let capabilityMSIX: UInt8 = 0x11
    /// Extended configuration space (PCIe): capabilities from 0x100.
    public static let extendedStart = 0x100
    public static let extendedEnd = 0x1000
    public static let extCapSRIOV: UInt16 = 0x0010
}

/// Virtio PCI capability types and constants (`transport-pci.tex`; digest c.2-c.3).
public enum VirtioPCIWire {
    public static let vendorID: UInt16 = 0x1AF4
    public static let capCommon: UInt8 = 1, capNotify: UInt8 = 2, capISR: UInt8 = 3, capDevice: UInt8 = 4,
                      capPCICfg: UInt8 = 5, capSharedMemory: UInt8 = 8, capVendor: UInt8 = 9

    /// Common config up to queue_device: what every 1.0 device has.
    public static let commonMinimumLength = 0x38
    /// Through admin_queue_num (1.3).
    public static let commonFullLength = 0x40
    public static let noVector: UInt16 = 0xFFFF

    /// The virtio device type a PCI device ID names (modern 0x1040+, transitional 0x1000-0x103F).
    public static func deviceID(pciDeviceID id: UInt16) -> UInt16? {
        switch id {
        case 0x1040...0x107F: id - 0x1040
        case 0x1000: 1
        case 0x1001: 2
        case 0x1002: 5
        case 0x1003: 3
        case 0x1004: 8
        case 0x1005: 4
        case 0x1009: 9
        default: nil
        }
    }
}

/// One field of `struct virtio_pci_common_cfg` (`transport-pci.tex` 4.1.4.3): its offset and width.
/// 64-bit fields appear as their two 32-bit halves, which is how the driver accesses them.
public enum CommonConfigField: Int, Sendable, CaseIterable {
    case deviceFeatureSelect = 0x00, deviceFeature = 0x04, driverFeatureSelect = 0x08, driverFeature = 0x0C
    case configMSIXVector = 0x10, numQueues = 0x12, deviceStatus = 0x14, configGeneration = 0x15
    case queueSelect = 0x16, queueSize = 0x18, queueMSIXVector = 0x1A, queueEnable = 0x1C, queueNotifyOff = 0x1E
    case queueDescLow = 0x20, queueDescHigh = 0x24, queueDriverLow = 0x28, queueDriverHigh = 0x2C
    case queueDeviceLow = 0x30, queueDeviceHigh = 0x34
    case queueNotifConfigData = 0x38, queueReset = 0x3A, adminQueueIndex = 0x3C, adminQueueNum = 0x3E

    @inlinable public var offset: Int { rawValue }

    /// The access width the spec allows for the field (8-bit fields 8-bit, 16-bit aligned 16-bit, 32/64-bit aligned 32-bit).
    public var width: Int {
        switch self {
        case .deviceStatus, .configGeneration: 1
        case .configMSIXVector, .numQueues, .queueSelect, .queueSize, .queueMSIXVector, .queueEnable, .queueNotifyOff,
             .queueNotifConfigData, .queueReset, .adminQueueIndex, .adminQueueNum: 2
        default: 4
        }
    }

    /// The field an access of `width` bytes at `offset` names, or nil when no field starts there with that width.
    public init?(offset: Int, width: Int) {
        guard let f = CommonConfigField(rawValue: offset), f.width == width else { return nil }
        self = f
    }
}

/// Field offsets inside `struct virtio_pci_cap` and `virtio_pci_notify_cap` / `virtio_pci_cfg_cap`
/// (`transport-pci.tex` 4.1.4), relative to the capability's start.
public enum VirtioPCICapField {
    public static let vendor = 0, next = 1, length = 2, configType = 3, bar = 4, id = 5, offset = 8, windowLength = 12
    /// `notify_off_multiplier` (notify capability) and `pci_cfg_data` (PCI_CFG capability).
    public static let notifyOffMultiplier = 16, pciCfgData = 16
    /// `cap_len` of a plain capability and of one with a fifth dword.
    public static let baseLength = 16, extendedLength = 20
}

/// Field offsets of the MSI-X capability (PCI Local Bus spec 6.8.2), relative to its start.
public enum MSIXCapField {
    public static let control = 2, table = 4, pendingBits = 8
    /// Message Control: table size minus one in bits 0-10; MSI-X Enable is bit 15 (bit 7 of its high byte).
    public static let tableSizeMask: UInt32 = 0x7FF
    public static let enableBit: UInt32 = 1 << 15
}

/// Field offsets of the SR-IOV extended capability (PCIe base spec 9.3.3), relative to its start.
public enum SRIOVCapField {
    public static let capabilities = 0x04, control = 0x08, initialVFs = 0x0C, totalVFs = 0x0E, numVFs = 0x10
    public static let firstVFOffset = 0x14, vfStride = 0x16, vfDeviceID = 0x1A
    /// SR-IOV Control bit 0; SR-IOV Capabilities bit 0.
    public static let controlVFEnable: UInt32 = 1, capabilityVFMigration: UInt32 = 1
}
