import CShim
import Logging
import Synchronization
import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// The modern virtio PCI transport over a `PCIFunction` (`transport-pci.tex`).
/// Registers are reached through mapped BAR pointers with volatile accesses of exactly the
/// field's width, or through the function's read/write calls when a BAR is not mapped.
public final class PCITransport<F: PCIFunction>: VirtioTransport, SRIOVOwner {
    public let function: F
    public let layout: VirtioPCILayout
    public let logger: Logger
    public let deviceID: UInt16
    public let deviceType: VirtioDeviceType?
    private let common: Region
    private let notifyRegion: Region
    private let isr: Region
    private let device: Region?
    /// The first error a doorbell write hit (notify cannot throw); nil while healthy.
    private let notifyError = Mutex<PCIError?>(nil)

    /// A BAR window and, when the BAR is mapped, a pointer to its start.
    struct Region {
        let window: BARWindow
        let pointer: UnsafeMutableRawPointer?
    }

    /// Walks the capabilities, then enables memory decoding and bus mastering
    /// (vfio-pci leaves bus mastering off; without it the device cannot reach the rings).
    public init(function: F, logger: Logger = Logger(label: "virtio.pci")) throws(VirtioError) {
        self.function = function
        self.logger = logger
        do {
            layout = try walkVirtioCapabilities(function)
        } catch {
            throw .transport(TransportError(function.address, .layout(TransportCause(error))))
        }
        func region(_ w: BARWindow) -> Region {
            Region(window: w, pointer: function.bar(w.bar)?.pointer(offset: w.offset, length: w.length))
        }
        common = region(layout.common)
        notifyRegion = region(layout.notify)
        isr = region(layout.isr)
        device = layout.device.map(region)
        let pciDevice: UInt16
        do {
            pciDevice = UInt16(truncatingIfNeeded: try function.configRead(offset: PCIConfig.deviceID, width: 2))
            let command = try function.configRead(offset: PCIConfig.command, width: 2)
            let wanted = command | PCIConfig.commandMemorySpace | PCIConfig.commandBusMaster
            if wanted != command { try function.configWrite(offset: PCIConfig.command, width: 2, value: wanted) }
        } catch {
            throw .transport(TransportError(function.address, .configSpace(TransportCause(error))))
        }
        deviceID = VirtioPCIWire.deviceID(pciDeviceID: pciDevice) ?? 0
        deviceType = VirtioDeviceType(rawValue: deviceID)
        for why in layout.ignored { logger.warning("capability ignored", metadata: ["why": "\(why)"]) }
    }

    public var name: String { function.address }
    public var dma: any DMAAllocator { function.dma }
    public var adminQueueRegistersAvailable: Bool { layout.common.length >= VirtioPCIWire.commonFullLength }

    /// Bits whose registers lie past the common window, and notification data when the doorbells
    /// cannot take aligned 32-bit writes (Linux `vp_check_common_size` drops the same bits).
    public var unsupportedFeatures: FeatureSet {
        var out = FeatureSet()
        let len = layout.common.length
        if len < CommonConfigField.queueNotifConfigData.offset + 2 { out.insert(VirtioFeature.notifConfigData) }
        if len < CommonConfigField.queueReset.offset + 2 { out.insert(VirtioFeature.ringReset) }
        if len < VirtioPCIWire.commonFullLength { out.insert(VirtioFeature.adminVQ) }
        if layout.notify.offset % 4 != 0 || layout.notifyMultiplier % 4 != 0 { out.insert(VirtioFeature.notificationData) }
        return out
    }

    public var notifyFailure: String? { notifyError.withLock { $0.map { "doorbell write failed: \($0)" } } }
    public var deviceConfigLength: Int { layout.device?.length ?? 0 }

    // MARK: register access

    private func read(_ r: Region, _ offset: Int, _ width: Int) throws(VirtioError) -> UInt64 {
        guard width == 1 || width == 2 || width == 4 else { throw .transport(TransportError(name, .accessWidth(width))) }
        guard offset >= 0, offset + width <= r.window.length else {
            throw .transport(TransportError(name, .outsideWindow(write: false, offset: offset, window: r.window.length)))
        }
        if let p = r.pointer {
            let a = p + offset
            switch width {
            case 1: return UInt64(cshim_mmio_read8(a))
            case 2: return UInt64(cshim_mmio_read16(a))
            default: return UInt64(cshim_mmio_read32(a))
            }
        }
        do { return try function.barRead(r.window.bar, offset: r.window.offset + offset, width: width) } catch {
            throw .transport(TransportError(name, .registerAccess(write: false, TransportCause(error))))
        }
    }

    private func write(_ r: Region, _ offset: Int, _ width: Int, _ value: UInt64) throws(VirtioError) {
        guard width == 1 || width == 2 || width == 4 else { throw .transport(TransportError(name, .accessWidth(width))) }
        guard offset >= 0, offset + width <= r.window.length else {
            throw .transport(TransportError(name, .outsideWindow(write: true, offset: offset, window: r.window.length)))
        }
        if let p = r.pointer {
            let a = p + offset
            switch width {
            case 1: cshim_mmio_write8(a, UInt8(truncatingIfNeeded: value))
            case 2: cshim_mmio_write16(a, UInt16(truncatingIfNeeded: value))
            default: cshim_mmio_write32(a, UInt32(truncatingIfNeeded: value))
            }
            return
        }
        do { try function.barWrite(r.window.bar, offset: r.window.offset + offset, width: width, value: value) } catch {
            throw .transport(TransportError(name, .registerAccess(write: true, TransportCause(error))))
        }
    }

    private func common8(_ o: Int) throws(VirtioError) -> UInt8 { UInt8(truncatingIfNeeded: try read(common, o, 1)) }
    private func common16(_ o: Int) throws(VirtioError) -> UInt16 { UInt16(truncatingIfNeeded: try read(common, o, 2)) }
    private func common32(_ o: Int) throws(VirtioError) -> UInt32 { UInt32(truncatingIfNeeded: try read(common, o, 4)) }
    /// 64-bit fields: two aligned 32-bit writes, low half first (`transport-pci.tex` access widths).
    private func write64(_ o: Int, _ v: UInt64) throws(VirtioError) {
        try write(common, o, 4, v & 0xFFFF_FFFF)
        try write(common, o + 4, 4, v >> 32)
    }

    // MARK: VirtioTransport

    public func readStatus() throws(VirtioError) -> DeviceStatus {
        DeviceStatus(rawValue: try common8(CommonConfigField.deviceStatus.offset))
    }

    public func writeStatus(_ status: DeviceStatus) throws(VirtioError) {
        try write(common, CommonConfigField.deviceStatus.offset, 1, UInt64(status.rawValue))
    }

    public func readDeviceFeatures() throws(VirtioError) -> FeatureSet {
        var bits: UInt64 = 0
        for select in 0..<2 {
            try write(common, CommonConfigField.deviceFeatureSelect.offset, 4, UInt64(select))
            bits |= UInt64(try common32(CommonConfigField.deviceFeature.offset)) << (32 * UInt64(select))
        }
        return FeatureSet(rawValue: bits)
    }

    public func writeDriverFeatures(_ features: FeatureSet) throws(VirtioError) {
        for select in 0..<2 {
            try write(common, CommonConfigField.driverFeatureSelect.offset, 4, UInt64(select))
            try write(common, CommonConfigField.driverFeature.offset, 4, UInt64(features.word(select)))
        }
    }

    public func numQueues() throws(VirtioError) -> Int { Int(try common16(CommonConfigField.numQueues.offset)) }

    private func select(_ queue: Int) throws(VirtioError) {
        try write(common, CommonConfigField.queueSelect.offset, 2, UInt64(queue))
    }

    public func queueMaxSize(_ queue: Int) throws(VirtioError) -> Int {
        try select(queue)
        return Int(try common16(CommonConfigField.queueSize.offset))
    }

    public func setUpQueue(_ queue: Int, size: Int, addresses: QueueAddresses, vector: UInt16?,
                           features: FeatureSet) throws(VirtioError) -> QueueSetup {
        try select(queue)
        if try common16(CommonConfigField.queueEnable.offset) != 0 { throw .queueAlreadyEnabled(queue: queue) }
        try write(common, CommonConfigField.queueSize.offset, 2, UInt64(size))
        try write64(CommonConfigField.queueDescLow.offset, addresses.descriptors)
        try write64(CommonConfigField.queueDriverLow.offset, addresses.driver)
        try write64(CommonConfigField.queueDeviceLow.offset, addresses.device)
        var granted: UInt16?
        if let vector {
            // The driver MUST read the vector back: NO_VECTOR means the device refused it.
            try write(common, CommonConfigField.queueMSIXVector.offset, 2, UInt64(vector))
            let back = try common16(CommonConfigField.queueMSIXVector.offset)
            granted = back == vector ? vector : nil
            if granted == nil { try write(common, CommonConfigField.queueMSIXVector.offset, 2, UInt64(VirtioPCIWire.noVector)) }
        }
        let off = Int(try common16(CommonConfigField.queueNotifyOff.offset))
        let withData = features.contains(VirtioFeature.notificationData)
        let width = withData ? 4 : 2
        let offset = off * Int(layout.notifyMultiplier)
        guard offset + width <= layout.notify.length else {
            throw .transport(TransportError(name, .doorbellOutsideWindow(queue: queue, offset: offset, width: width, window: layout.notify.length)))
        }
        // With notification data the doorbell takes aligned 32-bit writes.
        if withData, (layout.notify.offset + offset) % 4 != 0 {
            throw .transport(TransportError(name, .doorbellMisaligned(queue: queue)))
        }
        var value16 = UInt16(queue)
        if features.contains(VirtioFeature.notifConfigData) {
            value16 = try common16(CommonConfigField.queueNotifConfigData.offset)
        }
        // Unmapped doorbells are rung through the function: BAR in the high half, offset in the low.
        let target = NotifyTarget(pointer: notifyRegion.pointer.map { $0 + offset },
                                  location: UInt64(layout.notify.bar) << 32 | UInt64(layout.notify.offset + offset),
                                  value16: value16, withData: withData)
        return QueueSetup(notify: target, vector: granted)
    }

    public func enableQueue(_ queue: Int) throws(VirtioError) {
        try select(queue)
        try write(common, CommonConfigField.queueEnable.offset, 2, 1)
    }

    /// How long a queue reset may take (queue_reset reading 1), in milliseconds.
    public var queueResetTimeoutMilliseconds = 1_000

    public func resetQueue(_ queue: Int) throws(VirtioError) {
        try select(queue)
        try write(common, CommonConfigField.queueReset.offset, 2, 1)
        let done = try PollDeadline.poll(milliseconds: queueResetTimeoutMilliseconds) { () throws(VirtioError) -> Bool? in
            try common16(CommonConfigField.queueReset.offset) == 0 ? true : nil
        }
        guard done != nil else { throw .queueResetTimeout(queue: queue) }
        // Virtqueue Reset: once done the device presents 0 in queue_reset and in queue_enable.
        guard try common16(CommonConfigField.queueEnable.offset) == 0 else { throw .queueStillEnabled(queue: queue) }
    }

    public func configGeneration() throws(VirtioError) -> UInt8 { try common8(CommonConfigField.configGeneration.offset) }

    public func readDeviceConfig(offset: Int, width: Int) throws(VirtioError) -> UInt64 {
        guard let device else { throw .transport(TransportError(name, .noDeviceConfig)) }
        return try read(device, offset, width)
    }

    public func writeDeviceConfig(offset: Int, width: Int, value: UInt64) throws(VirtioError) {
        guard let device else { throw .transport(TransportError(name, .noDeviceConfig)) }
        try write(device, offset, width, value)
    }

    /// Reading ISR clears it (only meaningful without MSI-X).
    public func readISR() throws(VirtioError) -> UInt8 { UInt8(truncatingIfNeeded: try read(isr, 0, 1)) }

    public var interruptVectors: Int { layout.msixVectors ?? 0 }

    public func enableInterrupts(count: Int) throws(VirtioError) -> [Int32] {
        do { return try function.enableMSIX(vectors: count) } catch { throw .transport(TransportError(name, .interrupts(TransportCause(error)))) }
    }

    public func disableInterrupts() { function.disableInterrupts() }

    /// Programs config_msix_vector and reads it back; nil when the device refused it.
    public func setConfigVector(_ vector: UInt16) throws(VirtioError) -> UInt16? {
        try write(common, CommonConfigField.configMSIXVector.offset, 2, UInt64(vector))
        return try common16(CommonConfigField.configMSIXVector.offset) == vector ? vector : nil
    }

    public func adminQueueRange() throws(VirtioError) -> Range<Int> {
        guard adminQueueRegistersAvailable else {
            throw .transport(TransportError(name, .noAdminQueueFields(window: layout.common.length)))
        }
        let first = Int(try common16(CommonConfigField.adminQueueIndex.offset))
        let count = Int(try common16(CommonConfigField.adminQueueNum.offset))
        let regular = try numQueues()
        guard count > 0 else { throw .transport(TransportError(name, .adminQueueNumZero)) }
        // transport-pci.tex: admin_queue_index is at or past num_queues (admin queues are not counted there).
        guard first >= regular, first + count <= 0x10000 else {
            throw .transport(TransportError(name, .adminQueuesOverlap(first: first, count: count, regular: regular)))
        }
        return first..<first + count
    }

    public func sriovState() throws(VirtioError) -> SRIOVState? {
        do {
            guard let at = try findExtendedCapability(function, id: PCIConfig.extCapSRIOV) else { return nil }
            let caps = try function.configRead(offset: at + SRIOVCapField.capabilities, width: 4)
            let control = try function.configRead(offset: at + SRIOVCapField.control, width: 2)
            let total = try function.configRead(offset: at + SRIOVCapField.totalVFs, width: 2)
            let num = try function.configRead(offset: at + SRIOVCapField.numVFs, width: 2)
            return SRIOVState(totalVFs: Int(total), numVFs: Int(num), vfEnable: control & SRIOVCapField.controlVFEnable != 0,
                              vfMigrationCapable: caps & SRIOVCapField.capabilityVFMigration != 0)
        } catch {
            throw .transport(TransportError(name, .sriovCapability(TransportCause(error))))
        }
    }

    @inlinable @inline(__always)
    public func notify(_ target: NotifyTarget, value: UInt32) {
        if let p = target.pointer {
            // The ring writes before the doorbell store, as Linux's writel orders them (__iowmb):
            // free on x86-64, DMB OSHST on aarch64 (VIRTIO_F_ORDER_PLATFORM, "hardware" barriers).
            cshim_doorbell_barrier()
            if target.withData { cshim_mmio_write32(p, value) } else { cshim_mmio_write16(p, UInt16(truncatingIfNeeded: value)) }
            return
        }
        notifySlow(target, value: value)
    }

    @usableFromInline
    func notifySlow(_ target: NotifyTarget, value: UInt32) {
        do {
            try function.barWrite(Int(target.location >> 32), offset: Int(target.location & 0xFFFF_FFFF), width: target.withData ? 4 : 2,
                                  value: UInt64(value))
        } catch {
            notifyError.withLock { if $0 == nil { $0 = error } }
        }
    }
}

extension PCITransport: TransportDescribing {
    public var transportDetails: [(String, String)] {
        func w(_ x: BARWindow?) -> String {
            guard let x else { return "none" }
            let mapped = function.bar(x.bar)?.pointer(offset: x.offset, length: x.length) != nil
            return "BAR \(x.bar) +0x\(String(x.offset, radix: 16)), \(x.length) bytes" + (mapped ? ", mapped" : "")
        }
        var out: [(String, String)] = [
            ("transport", "virtio PCI (modern)"),
            ("barriers", RingBarriers.summary),
            ("common_cfg", w(layout.common)),
            ("notify", w(layout.notify) + ", multiplier \(layout.notifyMultiplier)"),
            ("isr", w(layout.isr)),
            ("device_cfg", w(layout.device)),
            ("msix_vectors", layout.msixVectors.map(String.init) ?? "none"),
        ]
        for (i, why) in layout.ignored.enumerated() { out.append(("ignored_capability_\(i)", why)) }
        return out + function.backendDetails
    }
}
