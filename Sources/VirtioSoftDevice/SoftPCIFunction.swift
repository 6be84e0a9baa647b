import CShim
import Synchronization
import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// Register state of one queue as the driver programs it.
struct QueueRegisters {
    var size: UInt16
    var vector: UInt16 = VirtioPCIWire.noVector
    var enabled = false
    var descriptors: UInt64 = 0
    var driver: UInt64 = 0
    var device: UInt64 = 0
    /// Fields written since reset: size, desc, driver, device.
    var written: Set<String> = []
    var resetReadsLeft = 0
}

/// Everything the driver can change through config space and the common configuration.
struct Registers {
    var config: [UInt8]
    var status: UInt8 = 0
    var resetReadsLeft = 0
    var statusBeforeReset: UInt8 = 0
    var deviceFeatureSelect: UInt32 = 0
    var driverFeatureSelect: UInt32 = 0
    var driverFeatures: UInt64 = 0
    var configVector: UInt16 = VirtioPCIWire.noVector
    var queueSelect: UInt16 = 0
    var queues: [QueueRegisters]
    var generation: UInt8 = 0
    var churnLeft: Int
    var msixTable: [UInt8]
    /// The device-specific configuration (a net device's status and MAC change at run time).
    var deviceConfig: [UInt8]
}

/// A software virtio PCI function, in process: configuration space with the virtio
/// capabilities, a BAR with common/notify/ISR/device-config register semantics, DMA through
/// an arena the driver allocates from, and device-side queues from `VirtioRing`. Requests are
/// served in the notifying thread, so a driver's kick returns with the work done.
/// It records what the driver did (`log`) and every rule it broke (`log.violations`).
public final class SoftPCIFunction<P: SoftPersonality>: PCIFunction, @unchecked Sendable {
    public let address: String
    public let personality: P
    /// The memory the device reaches by DMA: its own arena, or a vfio-user client's (adopted).
    public var arena: DMAArena { arenaBox.withLock { $0 } }
    let arenaBox: Mutex<DMAArena>
    public let faults: SoftFaults
    public let log: ConformanceLog
    let offered: FeatureSet
    /// Bytes of device-specific configuration (fixed; the contents live in `registers`).
    let deviceConfigLength: Int
    let queues: [SoftQueue]
    let msixVectors: Int
    let configSize: Int
    /// The admin queues' responder (an owner function), or nil.
    public let admin: SoftAdmin?
    let registers: Mutex<Registers>
    /// Read on the notify path without the register lock.
    let live = Atomic<Bool>(false)
    let busMaster = Atomic<Bool>(false)
    let needsReset = Atomic<Bool>(false)
    /// DEV_MODE_SET STOPPED: the function serves nothing and touches no memory until resumed.
    let stopped = Atomic<Bool>(false)
    let negotiatedBits = Atomic<UInt64>(0)
    let isr = Atomic<UInt8>(0)
    /// The eventfds of the MSI-X vectors the driver enabled (ours, or duplicates of a client's).
    let interruptFDs = Mutex<EventFDSet?>(nil)
    /// Told of every configuration change after DRIVER_OK (a vhost-user backend forwards it).
    public nonisolated(unsafe) var configChangeSink: (([UInt8]) -> Void)?
    /// Why the device set DEVICE_NEEDS_RESET.
    public let failure = Mutex<String?>(nil)

    public init(personality: P, address: String, dmaBytes: Int, msixVectors: Int = 8,
                faults: SoftFaults = SoftFaults(), ringFeatures: SoftRingFeatures, arena shared: DMAArena? = nil,
                admin: SoftAdmin? = nil) throws(SoftDeviceError) {
        self.address = address
        self.personality = personality
        self.faults = faults
        self.msixVectors = msixVectors
        self.admin = admin
        if let shared { arenaBox = Mutex(shared) } else {
            do { arenaBox = Mutex(try DMAArena(size: dmaBytes)) } catch { throw .dma("\(error)") }
        }
        var f = personality.deviceFeatures
        if !faults.omitVersion1 { f.insert(VirtioFeature.version1) }
        for bit in ringFeatures.bits { f.insert(bit) }
        if admin != nil { f.insert(VirtioFeature.adminVQ) }
        offered = f
        let deviceConfig = personality.configBytes()
        deviceConfigLength = deviceConfig.count
        let total = personality.queueCount + (admin?.queueCount ?? 0)
        let log = ConformanceLog()
        self.log = log
        queues = (0..<total).map { SoftQueue(index: $0, maxSize: personality.maxQueueSize, log: log) }
        let space = buildConfigSpace(deviceType: personality.deviceType, queues: total,
                                     deviceConfigLength: deviceConfig.count, msixVectors: msixVectors, faults: faults,
                                     sriov: admin?.sriov)
        configSize = space.count
        registers = Mutex(Registers(
            config: space,
            queues: Array(repeating: QueueRegisters(size: UInt16(personality.maxQueueSize)), count: total),
            churnLeft: faults.configChurnReads,
            msixTable: [UInt8](repeating: 0, count: msixVectors * 16), deviceConfig: deviceConfig))
    }

    deinit { disableInterrupts() }

    /// Features the device offers.
    public var offeredFeatures: FeatureSet { offered }
    /// Features the driver accepted at FEATURES_OK.
    public var negotiatedFeatures: FeatureSet { FeatureSet(rawValue: negotiatedBits.load(ordering: .acquiring)) }
    /// Arms `fault` for the next request on request queue `queue`. False when it cannot strike there:
    /// no such queue, a fault is armed and not yet taken, or `hold` on an IN_ORDER queue (the next
    /// in-order batch would retire a held request the device did serve, so it would not be a hold).
    @discardableResult
    public func inject(_ fault: SoftInjectedFault, queue: Int = 0) -> Bool {
        guard queue >= 0, queue < personality.queueCount else { return false }
        if fault == .hold, queues[queue].state.withLock({ $0.inOrder }) { return false }
        return queues[queue].armed.compareExchange(expected: 0, desired: fault.code, ordering: .relaxed).exchanged
    }

    /// The current device_status.
    public var status: UInt8 { registers.withLock { $0.status } | (needsReset.load(ordering: .acquiring) ? 0x40 : 0) }
    /// Doorbell writes seen per queue, and the last value written.
    public func notifications(queue: Int) -> (count: Int, last: UInt32) {
        (queues[queue].notifyCount.load(ordering: .relaxed), queues[queue].lastNotifyValue.load(ordering: .relaxed))
    }
    public func interrupts(queue: Int) -> Int { queues[queue].interruptCount.load(ordering: .relaxed) }

    func violation(_ rule: String, _ detail: String) { log.violation(rule, detail) }

    /// The device hit something it cannot recover from: DEVICE_NEEDS_RESET, stop serving.
    func deviceError(_ why: String) {
        failure.withLock { if $0 == nil { $0 = why } }
        needsReset.store(true, ordering: .releasing)
        live.store(false, ordering: .releasing)
    }

    // MARK: PCIFunction

    public var dma: any DMAAllocator { arena }

    public func bar(_ index: Int) -> BARInfo? {
        switch index {
        case SoftBAR.virtio: BARInfo(size: SoftBAR.virtioSize, isMemory: true, mapped: nil)
        case SoftBAR.msix: BARInfo(size: SoftBAR.msixSize, isMemory: true, mapped: nil)
        default: nil
        }
    }

    /// Fault `status_ff`: after the set number of requests the function is gone, and every read
    /// returns all ones, as a PCI read of a removed device does.
    var removed: Bool {
        faults.surpriseRemoval && queues.reduce(0) { $0 + $1.completedCount.load(ordering: .relaxed) } >= faults.faultAfterRequests
    }

    public func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 {
        try checkConfigAccess(offset, width)
        if removed { return width == 4 ? 0xFFFF_FFFF : (1 << (8 * UInt32(width))) - 1 }
        if offset == SoftBAR.pciCfgData { return try pciCfgAccess(write: nil) }
        return registers.withLock { r in
            var v: UInt32 = 0
            for i in 0..<width { v |= UInt32(r.config[offset + i]) << (8 * UInt32(i)) }
            return v
        }
    }

    public func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {
        try checkConfigAccess(offset, width)
        if offset == SoftBAR.pciCfgData { _ = try pciCfgAccess(write: value); return }
        registers.withLock { r in
            for i in 0..<width {
                let at = offset + i
                let byte = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))
                switch at {
                case PCIConfig.command:
                    r.config[at] = byte & 0x07  // I/O, memory, bus master
                case PCIConfig.command + 1:
                    r.config[at] = byte & 0x04  // INTx disable
                case SoftBAR.msixEnableByte:
                    r.config[at] = (r.config[at] & 0x3F) | (byte & 0xC0)  // MSI-X enable, function mask
                case SoftBAR.pciCfgCap + VirtioPCICapField.bar,
                     SoftBAR.pciCfgCap + VirtioPCICapField.offset..<SoftBAR.pciCfgCap + VirtioPCICapField.pciCfgData:
                    r.config[at] = byte  // PCI_CFG bar, offset, length
                default:
                    break  // read-only
                }
            }
            if offset <= PCIConfig.command + 1 && offset + width > PCIConfig.command {
                let command = UInt16(r.config[4]) | UInt16(r.config[5]) << 8
                busMaster.store(command & UInt16(PCIConfig.commandBusMaster) != 0, ordering: .releasing)
                log.record(.commandRegister(command))
            }
        }
    }

    /// pci_cfg_data: an access of cap.length bytes at cap.bar/cap.offset, which MUST be aligned
    /// and inside a structure another capability describes (`transport-pci.tex` PCI configuration access).
    private func pciCfgAccess(write value: UInt32?) throws(PCIError) -> UInt32 {
        let (bar, off, len) = registers.withLock { r -> (Int, Int, Int) in
            let c = SoftBAR.pciCfgCap
            let o = LEReader(Array(r.config[(c + VirtioPCICapField.offset)..<(c + VirtioPCICapField.offset + 4)])).u32(0)
            return (Int(r.config[c + VirtioPCICapField.bar]), Int(o), Int(r.config[c + VirtioPCICapField.windowLength]))
        }
        let inside = bar == SoftBAR.virtio && (SoftBAR.windows(queues: queues.count, deviceConfig: deviceConfigLength)
            .contains { off >= $0.lowerBound && off + len <= $0.upperBound })
        guard len > 0, len <= 4, len & (len - 1) == 0, off % len == 0, inside else {
            violation("transport-pci.tex PCI configuration access capability: accesses are aligned, 1, 2 or 4 bytes, inside another capability's window",
                      "PCI_CFG access of \(len) bytes at BAR \(bar) offset 0x\(String(off, radix: 16))")
            return 0
        }
        if let value {
            try barWrite(bar, offset: off, width: len, value: UInt64(value))
            return 0
        }
        return UInt32(truncatingIfNeeded: try barRead(bar, offset: off, width: len))
    }

    private func checkConfigAccess(_ offset: Int, _ width: Int) throws(PCIError) {
        guard width > 0, width <= 4, width & (width - 1) == 0 else { throw .badWidth(width) }
        guard offset >= 0, offset + width <= configSize, offset % width == 0 else {
            throw .outOfRange(what: "config space", offset: offset, width: width, limit: configSize)
        }
    }

    public func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        try checkBARAccess(index, offset, width)
        if removed { return width == 8 ? .max : (1 << (8 * UInt64(width))) - 1 }
        if index == SoftBAR.msix {
            return registers.withLock { r in
                guard offset < r.msixTable.count else { return 0 }
                var v: UInt64 = 0
                for i in 0..<width where offset + i < r.msixTable.count { v |= UInt64(r.msixTable[offset + i]) << (8 * UInt64(i)) }
                return v
            }
        }
        switch offset {
        case SoftBAR.common..<SoftBAR.common + VirtioPCIWire.commonFullLength:
            return UInt64(readCommon(offset - SoftBAR.common, width))
        case SoftBAR.isr..<SoftBAR.isr + 4:
            // Reading ISR clears it.
            return UInt64(isr.exchange(0, ordering: .acquiringAndReleasing))
        case SoftBAR.device..<SoftBAR.device + deviceConfigLength:
            return readDeviceConfig(offset - SoftBAR.device, width)
        default:
            return 0
        }
    }

    public func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) {
        try checkBARAccess(index, offset, width)
        if index == SoftBAR.msix {
            registers.withLock { r in
                for i in 0..<width where offset + i < r.msixTable.count {
                    r.msixTable[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
                }
            }
            return
        }
        switch offset {
        case SoftBAR.notify..<SoftBAR.notify + queues.count * SoftBAR.notifyMultiplier:
            notify(offset - SoftBAR.notify, width, UInt32(truncatingIfNeeded: value))
        case SoftBAR.common..<SoftBAR.common + VirtioPCIWire.commonFullLength:
            writeCommon(offset - SoftBAR.common, width, value)
        case SoftBAR.device..<SoftBAR.device + deviceConfigLength:
            if registers.withLock({ $0.status }) & DeviceStatus.featuresOK.rawValue == 0 {
                violation("content.tex Device Configuration Space: the driver MUST NOT write device config before FEATURES_OK",
                          "device config written at offset \(offset - SoftBAR.device) before FEATURES_OK")
            } else if personality.deviceType == .net {
                violation("net Device configuration layout: the driver MUST NOT write to any of the device configuration fields",
                          "device config written at offset \(offset - SoftBAR.device)")
            }
            // blk config is read-only except writeback with CONFIG_WCE, which this device does not offer.
        default:
            violation("transport-pci.tex: writes go to a structure a capability describes",
                      "write to BAR \(index) offset 0x\(String(offset, radix: 16)) outside every virtio structure")
        }
    }

    private func checkBARAccess(_ index: Int, _ offset: Int, _ width: Int) throws(PCIError) {
        guard let info = bar(index) else { throw .noSuchBAR(index) }
        guard width > 0, width <= 8, width & (width - 1) == 0 else { throw .badWidth(width) }
        guard offset >= 0, offset + width <= info.size else {
            throw .outOfRange(what: "BAR \(index)", offset: offset, width: width, limit: info.size)
        }
    }

    private func readDeviceConfig(_ offset: Int, _ width: Int) -> UInt64 {
        // Fault: the config "changes" under the driver; the generation moves and this read is garbage.
        let (v, churn) = registers.withLock { r -> (UInt64, Bool) in
            var v: UInt64 = 0
            for i in 0..<width where offset + i < r.deviceConfig.count { v |= UInt64(r.deviceConfig[offset + i]) << (8 * UInt64(i)) }
            guard r.churnLeft > 0 else { return (v, false) }
            r.churnLeft -= 1
            r.generation &+= 1
            return (v, true)
        }
        return churn ? ~v & (width == 8 ? ~0 : (1 << (8 * UInt64(width))) - 1) : v
    }

    /// The device changes its configuration: `body` edits it, config_generation moves (unless
    /// `silently`, a fault mode) and, after DRIVER_OK, the driver gets a configuration-change
    /// notification (the config vector's eventfd, or ISR bit 1: `content.tex` "Notification of
    /// Device Configuration Changes").
    /// `notify: false`: the generation moves but no notification goes out (a change the driver asked for).
    public func changeDeviceConfig(silently: Bool = false, notify: Bool = true, _ body: (inout [UInt8]) -> Void) {
        let vector = registers.withLock { r -> UInt16 in
            body(&r.deviceConfig)
            if !silently { r.generation &+= 1 }
            return r.configVector
        }
        guard !silently, notify, live.load(ordering: .acquiring) else { return }
        configChangeSink?(self.deviceConfigSnapshot)
        if vector != VirtioPCIWire.noVector, let fd = interruptFD(vector: vector) {
            var one: UInt64 = 1
            _ = write(fd, &one, 8)
        } else {
            isr.bitwiseOr(2, ordering: .acquiringAndReleasing)
        }
    }

    /// The device-specific configuration now.
    public var deviceConfigSnapshot: [UInt8] { registers.withLock { $0.deviceConfig } }

    // MARK: MSI-X

    public func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] {
        guard vectors >= 1, vectors <= msixVectors else {
            throw .unsupported("\(address): \(vectors) MSI-X vectors asked, the table has \(msixVectors)")
        }
        disableInterrupts()
        let fds = try EventFDSet.vectors(vectors)
        interruptFDs.withLock { $0 = fds }
        registers.withLock { $0.config[SoftBAR.msixEnableByte] |= SoftBAR.msixEnableMask }
        return fds.raw
    }

    public func disableInterrupts() {
        interruptFDs.withLock { fds in
            fds?.close()
            fds = nil
        }
        registers.withLock { $0.config[SoftBAR.msixEnableByte] &= ~SoftBAR.msixEnableMask }
    }

    func interruptFD(vector: UInt16) -> Int32? {
        interruptFDs.withLock { $0?[Int(vector)] }
    }
}


/// Which ring features the software device offers.
public struct SoftRingFeatures: Sendable {
    public var bits: [Int]
    public init(bits: [Int]) { self.bits = bits }
    public init(_ o: SoftBlockOptions) {
        var b = [Int]()
        if o.packed { b.append(VirtioFeature.ringPacked) }
        if o.inOrder { b.append(VirtioFeature.inOrder) }
        if o.eventIdx { b.append(VirtioFeature.eventIdx) }
        if o.indirect { b.append(VirtioFeature.indirectDesc) }
        if o.ringReset { b.append(VirtioFeature.ringReset) }
        if o.notificationData { b.append(VirtioFeature.notificationData) }
        if o.notifConfigData { b.append(VirtioFeature.notifConfigData) }
        bits = b
    }
}
