import VirtioWire
/// A window into a BAR that a virtio capability describes.
public struct BARWindow: Sendable, Equatable {
    public let bar: Int
    public let offset: Int
    public let length: Int
}

/// What the capability walk found: the virtio structures and MSI-X.
public struct VirtioPCILayout: Sendable, Equatable {
    public var common: BARWindow
    public var notify: BARWindow
    public var notifyMultiplier: UInt32
    public var isr: BARWindow
    public var device: BARWindow?
    /// Config-space offset of the PCI_CFG access capability.
    public var pciCfgCapability: Int?
    /// MSI-X table size (vectors) and the capability's offset.
    public var msixVectors: Int?
    public var msixCapability: Int?
    /// Capabilities ignored and why (reported by `info`, never fatal on their own).
    public var ignored: [String]
}

/// Why a function cannot be driven by the virtio PCI transport.
public enum CapabilityError: Error, Sendable, Equatable, CustomStringConvertible {
    case notVirtio(vendor: UInt16, device: UInt16)
    case legacyOnly
    case missing(String, ignored: [String])
    case commonTooShort(Int)
    case badNotify(String)
    case config(PCIError)

    public var description: String {
        switch self {
        case let .notVirtio(v, d):
            "not a virtio function: vendor 0x\(String(v, radix: 16)) device 0x\(String(d, radix: 16)) (want vendor 0x1af4, device 0x1000-0x107f)"
        case .legacyOnly:
            "no virtio vendor capabilities: a legacy-only device, which this driver does not drive"
        case let .missing(what, ignored):
            "no usable \(what) capability" + (ignored.isEmpty ? "" : " (ignored: \(ignored.joined(separator: "; ")))")
        case let .commonTooShort(n):
            "common configuration window is \(n) bytes, less than the 0x38 every virtio 1.0 device provides"
        case let .badNotify(why):
            "notify capability: \(why)"
        case let .config(e):
            "PCI configuration space: \(e)"
        }
    }
}

/// Walks the capability list of `function` with every check of `transport-pci.tex` (digest c.2):
/// list loops and bounds, capability lengths, reserved BAR numbers, windows inside their BAR,
/// the first instance of each type, the common-config length, the notify multiplier.
public func walkVirtioCapabilities(_ function: some PCIFunction) throws(CapabilityError) -> VirtioPCILayout {
    func cfg(_ offset: Int, _ width: Int) throws(CapabilityError) -> UInt32 {
        do { return try function.configRead(offset: offset, width: width) } catch { throw .config(error) }
    }
    let vendor = UInt16(truncatingIfNeeded: try cfg(PCIConfig.vendorID, 2))
    let device = UInt16(truncatingIfNeeded: try cfg(PCIConfig.deviceID, 2))
    guard vendor == VirtioPCIWire.vendorID, (0x1000...0x107F).contains(device) else {
        throw .notVirtio(vendor: vendor, device: device)
    }
    guard try cfg(PCIConfig.status, 2) & PCIConfig.statusCapabilityList != 0 else { throw .legacyOnly }

    var common: BARWindow?, notify: BARWindow?, isr: BARWindow?, dev: BARWindow?
    var multiplier: UInt32 = 0
    var pciCfg: Int?, msixVectors: Int?, msixCap: Int?
    var ignored: [String] = []
    var sawVirtio = false
    var visited = Set<Int>()
    var pointer = Int(try cfg(PCIConfig.capabilitiesPointer, 1)) & ~3
    // A capability lives in 0x40..0xFF; the list may not revisit an entry (at most 48 fit).
    while pointer != 0 {
        guard pointer >= 0x40, pointer <= 0xFC, visited.insert(pointer).inserted else {
            ignored.append("capability list broken at 0x\(String(pointer, radix: 16))")
            break
        }
        let id = UInt8(truncatingIfNeeded: try cfg(pointer, 1))
        let next = Int(try cfg(pointer + VirtioPCICapField.next, 1)) & ~3
        defer { pointer = next }
        if id == PCIConfig.capabilityMSIX {
            let control = try cfg(pointer + MSIXCapField.control, 2)
            msixVectors = Int(control & MSIXCapField.tableSizeMask) + 1
            msixCap = pointer
            continue
        }
        guard id == PCIConfig.capabilityVendor else { continue }
        sawVirtio = true
        let at = "0x" + String(pointer, radix: 16)
        let capLen = Int(try cfg(pointer + VirtioPCICapField.length, 1))
        let type = UInt8(truncatingIfNeeded: try cfg(pointer + VirtioPCICapField.configType, 1))
        guard capLen >= VirtioPCICapField.baseLength, pointer + capLen <= 0x100 else {
            ignored.append("capability at \(at): cap_len \(capLen) is shorter than 16 or runs past config space")
            continue
        }
        if type == VirtioPCIWire.capPCICfg {
            if capLen >= VirtioPCICapField.extendedLength { pciCfg = pciCfg ?? pointer } else { ignored.append("PCI_CFG at \(at): cap_len \(capLen) < 20") }
            continue
        }
        guard [VirtioPCIWire.capCommon, VirtioPCIWire.capNotify, VirtioPCIWire.capISR, VirtioPCIWire.capDevice].contains(type) else {
            continue  // shared memory, vendor data and reserved types: not used by this driver
        }
        let barIndex = Int(try cfg(pointer + VirtioPCICapField.bar, 1))
        let offset = Int(try cfg(pointer + VirtioPCICapField.offset, 4))
        let length = Int(try cfg(pointer + VirtioPCICapField.windowLength, 4))
        guard barIndex <= 5 else {
            ignored.append("capability at \(at) (type \(type)): BAR \(barIndex) is reserved")
            continue
        }
        guard let bar = function.bar(barIndex), bar.size > 0, bar.isMemory else {
            ignored.append("capability at \(at) (type \(type)): BAR \(barIndex) is not an implemented memory BAR")
            continue
        }
        // offset + length must lie inside the BAR (computed without overflow: both are < 2^32).
        guard offset + length <= bar.size else {
            ignored.append("capability at \(at) (type \(type)): window 0x\(String(offset, radix: 16))+\(length) exceeds BAR \(barIndex) (\(bar.size) bytes)")
            continue
        }
        let window = BARWindow(bar: barIndex, offset: offset, length: length)
        switch type {
        case VirtioPCIWire.capCommon where common == nil:
            common = window
        case VirtioPCIWire.capNotify where notify == nil:
            guard capLen >= VirtioPCICapField.extendedLength else {
                ignored.append("notify capability at \(at): cap_len \(capLen) < 20 (no notify_off_multiplier)")
                continue
            }
            let m = try cfg(pointer + VirtioPCICapField.notifyOffMultiplier, 4)
            // An even power of two, or 0 (one doorbell for all queues).
            guard m == 0 || (m & (m - 1) == 0 && m % 2 == 0) else {
                ignored.append("notify capability at \(at): notify_off_multiplier \(m) is not 0 or an even power of two")
                continue
            }
            guard offset % 2 == 0, length >= 2 else {
                ignored.append("notify capability at \(at): offset \(offset) not 2-aligned or length \(length) < 2")
                continue
            }
            notify = window
            multiplier = m
        case VirtioPCIWire.capISR where isr == nil:
            guard length >= 1 else { ignored.append("ISR capability at \(at): length 0"); continue }
            isr = window
        case VirtioPCIWire.capDevice where dev == nil:
            dev = window
        default:
            continue  // a later instance of a type already found: the first is the device's preference
        }
    }
    guard sawVirtio else { throw .legacyOnly }
    guard let common else { throw .missing("common configuration", ignored: ignored) }
    guard common.length >= VirtioPCIWire.commonMinimumLength else { throw .commonTooShort(common.length) }
    guard let notify else { throw .missing("notify", ignored: ignored) }
    guard let isr else { throw .missing("ISR", ignored: ignored) }
    return VirtioPCILayout(common: common, notify: notify, notifyMultiplier: multiplier, isr: isr, device: dev,
                           pciCfgCapability: pciCfg, msixVectors: msixVectors, msixCapability: msixCap,
                           ignored: ignored)
}
