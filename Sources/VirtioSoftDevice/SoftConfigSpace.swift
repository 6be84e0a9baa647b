import VirtioCore
import VirtioPCI
import VirtioWire

/// Where the software function puts things (BAR 4 holds the virtio structures, BAR 1 MSI-X).
enum SoftBAR {
    static let virtio = 4
    static let virtioSize = 0x4000
    static let common = 0x0000
    static let isr = 0x1000
    static let device = 0x2000
    static let notify = 0x3000
    static let notifyMultiplier = 4
    static let msix = 1
    static let msixSize = 0x1000
    static let msixPBA = 0x800
    static let pciCfgCap = 0x84
    /// The MSI-X capability, and the byte of Message Control holding MSI-X Enable.
    static let msixCap = 0x98
    static let msixEnableByte = msixCap + MSIXCapField.control + 1
    static let msixEnableMask = UInt8(MSIXCapField.enableBit >> 8)
    static let pciCfgData = pciCfgCap + VirtioPCICapField.pciCfgData

    /// The virtio structures' windows in BAR 4.
    static func windows(queues: Int, deviceConfig: Int) -> [Range<Int>] {
        [common..<common + 0x40, isr..<isr + 4, device..<device + deviceConfig,
         notify..<notify + max(queues, 1) * notifyMultiplier]
    }
}

/// Builds the 256-byte configuration space: header, virtio vendor capabilities and MSI-X.
/// With `sriov`, the space is PCIe-sized (4 KiB) and carries an SR-IOV extended capability at 0x100.
func buildConfigSpace(deviceType: VirtioDeviceType, queues: Int, deviceConfigLength: Int, msixVectors: Int,
                      faults: SoftFaults, sriov: SRIOVState? = nil) -> [UInt8] {
    var c = [UInt8](repeating: 0, count: sriov == nil ? 256 : PCIConfig.extendedEnd)
    func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
        withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { c[at + i] = b } }
    }
    put(VirtioPCIWire.vendorID, PCIConfig.vendorID)
    put(UInt16(0x1040) + deviceType.rawValue, PCIConfig.deviceID)
    put(UInt16(PCIConfig.statusCapabilityList), PCIConfig.status)
    c[PCIConfig.revision] = 1
    c[PCIConfig.classCode + 2] = deviceType == .block ? 0x01 : 0xFF  // mass storage
    // BAR 1: 32-bit memory (MSI-X); BAR 4/5: 64-bit memory (virtio structures).
    put(UInt32(0xFEB0_0000), PCIConfig.bar0 + 4 * SoftBAR.msix)
    put(UInt32(0xFE00_0004), PCIConfig.bar0 + 4 * SoftBAR.virtio)
    put(VirtioPCIWire.vendorID, PCIConfig.subsystemVendorID)
    put(UInt16(0x1100), PCIConfig.subsystemID)
    c[PCIConfig.capabilitiesPointer] = 0x40

    var at = 0x40
    func vendorCap(type: UInt8, offset: Int, length: Int, extra: UInt32? = nil, next: Int) {
        c[at + VirtioPCICapField.vendor] = PCIConfig.capabilityVendor
        c[at + VirtioPCICapField.next] = UInt8(next)
        c[at + VirtioPCICapField.length] = UInt8(extra == nil ? VirtioPCICapField.baseLength : VirtioPCICapField.extendedLength)
        c[at + VirtioPCICapField.configType] = type
        c[at + VirtioPCICapField.bar] = UInt8(SoftBAR.virtio)
        put(UInt32(offset), at + VirtioPCICapField.offset)
        put(UInt32(length), at + VirtioPCICapField.windowLength)
        if let extra { put(extra, at + VirtioPCICapField.notifyOffMultiplier) }
    }
    let commonLength = faults.commonLength ?? VirtioPCIWire.commonFullLength
    let commonOffset = faults.commonOutsideBAR ? SoftBAR.virtioSize - 0x20 : SoftBAR.common
    vendorCap(type: VirtioPCIWire.capCommon, offset: commonOffset, length: commonLength, next: 0x50); at = 0x50
    vendorCap(type: VirtioPCIWire.capISR, offset: SoftBAR.isr, length: 4, next: 0x60); at = 0x60
    vendorCap(type: VirtioPCIWire.capDevice, offset: SoftBAR.device, length: deviceConfigLength, next: 0x70); at = 0x70
    let multiplier = faults.oddNotifyMultiplier ? 6 : SoftBAR.notifyMultiplier
    vendorCap(type: VirtioPCIWire.capNotify, offset: SoftBAR.notify, length: max(queues, 1) * SoftBAR.notifyMultiplier,
              extra: UInt32(multiplier), next: 0x84); at = 0x84
    // PCI_CFG access capability: bar/offset/length/data are the driver's to write.
    vendorCap(type: VirtioPCIWire.capPCICfg, offset: 0, length: 0, extra: 0, next: SoftBAR.msixCap)
    // MSI-X: table in BAR 1 at 0, PBA at 0x800.
    c[SoftBAR.msixCap] = PCIConfig.capabilityMSIX
    c[SoftBAR.msixCap + 1] = faults.capabilityLoop ? 0x40 : 0
    put(UInt16(msixVectors - 1), SoftBAR.msixCap + MSIXCapField.control)
    put(UInt32(SoftBAR.msix), SoftBAR.msixCap + MSIXCapField.table)
    put(UInt32(SoftBAR.msixPBA | SoftBAR.msix), SoftBAR.msixCap + MSIXCapField.pendingBits)
    if let sriov {
        // PCIe SR-IOV extended capability (ID 0x0010, version 1, last in the list).
        let at = PCIConfig.extendedStart
        put(UInt32(PCIConfig.extCapSRIOV) | 1 << 16, at)
        put(sriov.vfMigrationCapable ? SRIOVCapField.capabilityVFMigration : 0, at + SRIOVCapField.capabilities)
        put(UInt16(sriov.vfEnable ? SRIOVCapField.controlVFEnable : 0), at + SRIOVCapField.control)
        put(UInt16(sriov.totalVFs), at + SRIOVCapField.initialVFs)
        put(UInt16(sriov.totalVFs), at + SRIOVCapField.totalVFs)
        put(UInt16(sriov.numVFs), at + SRIOVCapField.numVFs)
        put(UInt16(1), at + SRIOVCapField.firstVFOffset)
        put(UInt16(1), at + SRIOVCapField.vfStride)
        put(UInt16(0x1040) + deviceType.rawValue, at + SRIOVCapField.vfDeviceID)
    }
    return c
}
