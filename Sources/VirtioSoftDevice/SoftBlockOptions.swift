import VirtioRing
import VirtioWire

/// How a software virtio-blk device is built: `soft:blk,size=64M,queues=2,packed=off,...`.
public struct SoftBlockOptions: Sendable, Equatable {
    /// Capacity in bytes (a multiple of 512). With `file`, nil means the file's size.
    public var size: UInt64? = 64 << 20
    public var file: String?
    public var queues = 1
    /// The maximum queue size the device offers.
    public var queueSize = 256
    public var packed = true
    public var inOrder = true
    public var eventIdx = true
    public var indirect = true
    public var ringReset = true
    public var notificationData = true
    public var notifConfigData = false
    public var flush = true
    public var discard = true
    public var writeZeroes = true
    public var readOnly = false
    /// Logical block size reported in blk_size.
    public var blockSize = 512
    public var segMax = 126
    public var serial = "soft-blk"
    /// MSI-X table size.
    public var msixVectors = 8
    /// Bytes of DMA memory the function offers the driver (rings, request headers, data buffers).
    public var dmaBytes = 64 << 20
    /// SR-IOV members (VFs) behind this function, which then is their owner with an admin queue.
    public var vfs = 0
    /// Offer VIRTIO_F_ADMIN_VQ (on by itself when `vfs` > 0).
    public var admin = false
    public var adminQueues = 1
    /// VF Enable in the SR-IOV capability (off: every SR-IOV group command fails, as the spec says).
    public var vfEnable = true
    /// VF Migration Capable in the SR-IOV capabilities (drivers must refuse group commands then).
    public var vfMigrationCapable = false
    /// Admin-queue misbehaviour for driver tests.
    public var adminFault: SoftAdminFault?
    /// Fault modes (`fault=NAME`, repeatable) and when they strike (`fault_after=N` requests).
    public var faults = SoftFaults()
    /// Seed 000's draft statistics queue, after the request queues, on feature bit 23 (never 11).
    public var statsQueue = false
    /// Complete reads and writes without moving data (a null device, for transport benchmarks).
    public var nullBackend = false
    /// With the statistics queue: the device asks for statistics this often (ms; 0: only when told).
    public var statsInterval = 1000

    public init() {}

    /// Whether the function has an admin queue.
    public var hasAdmin: Bool { admin || vfs > 0 }

    /// Every key `soft:blk` understands, with what it means (for errors and `--help`).
    public static let keys: [(String, String)] = [
        ("size", "capacity, e.g. 64M, 1G, 4096 (bytes; K/M/G suffixes are powers of two)"),
        ("file", "back the disk with this file (created if missing; sized by `size` or by the file)"),
        ("queues", "number of request queues (1-64)"),
        ("queue_size", "maximum queue size offered (1-32768; a power of two when packed=off)"),
        ("packed", "offer VIRTIO_F_RING_PACKED (on|off)"),
        ("in_order", "offer VIRTIO_F_IN_ORDER (on|off)"),
        ("event_idx", "offer VIRTIO_F_EVENT_IDX (on|off)"),
        ("indirect", "offer VIRTIO_F_INDIRECT_DESC (on|off)"),
        ("ring_reset", "offer VIRTIO_F_RING_RESET (on|off)"),
        ("notification_data", "offer VIRTIO_F_NOTIFICATION_DATA (on|off)"),
        ("notif_config_data", "offer VIRTIO_F_NOTIF_CONFIG_DATA (on|off)"),
        ("flush", "offer VIRTIO_BLK_F_FLUSH (on|off)"),
        ("discard", "offer VIRTIO_BLK_F_DISCARD (on|off)"),
        ("write_zeroes", "offer VIRTIO_BLK_F_WRITE_ZEROES (on|off)"),
        ("ro", "read-only device, VIRTIO_BLK_F_RO (on|off)"),
        ("block_size", "logical block size: 512, 1024, 2048 or 4096"),
        ("seg_max", "maximum data segments per request (1-1024)"),
        ("serial", "GET_ID serial (up to 20 bytes)"),
        ("msix", "MSI-X vectors (1-128)"),
        ("dma", "DMA memory offered to the driver, e.g. 64M"),
        ("vfs", "SR-IOV members (0-16): the function becomes their owner, with an admin queue"),
        ("admin", "offer VIRTIO_F_ADMIN_VQ (on|off; on by itself with vfs)"),
        ("admin_queues", "admin queues (1-4)"),
        ("vf_enable", "VF Enable in the SR-IOV capability (on|off)"),
        ("vf_migration_capable", "VF Migration Capable in the SR-IOV capability (on|off; default off)"),
        ("stats_vq", "the seed-000 draft statistics queue after the request queues, on feature bit 23 (on|off)"),
        ("null", "null backend: reads and writes complete at once, no data moves (on|off)"),
        ("stats_interval", "with stats_vq: the device asks for statistics every N ms (0: never by itself)"),
        ("fault", "hostile device mode (repeatable): " + SoftFaults.modeNames.joined(separator: ", ")),
        ("fault_after", "requests completed before a fault mode strikes (default 8)"),
        ("admin_fault", "admin misbehaviour: " + SoftAdminFault.allCases.map(\.rawValue).joined(separator: ", ")),
    ]

    /// Parses `key=value` pairs; every error names the key and what is allowed.
    public init(parsing pairs: [String]) throws(SoftDeviceError) {
        self.init()
        var sizeGiven = false
        for pair in pairs where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts[0].lowercased().replacingDash()
            guard parts.count == 2, !parts[1].isEmpty else {
                throw .badOption("'\(pair)' is not key=value")
            }
            let value = parts[1]
            func flag() throws(SoftDeviceError) -> Bool {
                switch value.lowercased() {
                case "on", "yes", "true", "1": return true
                case "off", "no", "false", "0": return false
                default: throw .badOption("\(key)=\(value): expected on or off")
                }
            }
            func int(_ range: ClosedRange<Int>) throws(SoftDeviceError) -> Int {
                guard let n = Int(value), range.contains(n) else {
                    throw .badOption("\(key)=\(value): expected a number in \(range.lowerBound)...\(range.upperBound)")
                }
                return n
            }
            switch key {
            case "size":
                guard let n = parseByteSize(value), n > 0 else { throw .badOption("size=\(value): expected bytes like 64M, 1G or 1048576") }
                size = n
                sizeGiven = true
            case "file": file = value
            case "queues": queues = try int(1...64)
            case "queue_size": queueSize = try int(1...32768)
            case "packed": packed = try flag()
            case "in_order": inOrder = try flag()
            case "event_idx": eventIdx = try flag()
            case "indirect": indirect = try flag()
            case "ring_reset": ringReset = try flag()
            case "notification_data": notificationData = try flag()
            case "notif_config_data": notifConfigData = try flag()
            case "flush": flush = try flag()
            case "discard": discard = try flag()
            case "write_zeroes": writeZeroes = try flag()
            case "ro": readOnly = try flag()
            case "block_size":
                let n = try int(512...4096)
                guard [512, 1024, 2048, 4096].contains(n) else { throw .badOption("block_size=\(value): expected 512, 1024, 2048 or 4096") }
                blockSize = n
            case "seg_max": segMax = try int(1...1024)
            case "serial":
                guard value.utf8.count <= 20 else { throw .badOption("serial=\(value): at most 20 bytes") }
                serial = value
            case "msix": msixVectors = try int(1...128)
            case "dma":
                guard let n = parseByteSize(value), n >= 1 << 20, n <= 1 << 34 else {
                    throw .badOption("dma=\(value): expected 1M to 16G")
                }
                dmaBytes = Int(n)
            case "fault":
                guard faults.enable(value.lowercased()) else {
                    throw .badOption("fault=\(value): no such mode; modes: " + SoftFaults.modeNames.joined(separator: ", "))
                }
            case "fault_after":
                faults.faultAfterRequests = try int(0...1_000_000)
                if faults.needsResetAfterRequests != nil { faults.needsResetAfterRequests = faults.faultAfterRequests }
            case "stats_vq": statsQueue = try flag()
            case "null": nullBackend = try flag()
            case "stats_interval": statsInterval = try int(0...60_000)
            case "vfs": vfs = try int(0...16)
            case "admin": admin = try flag()
            case "admin_queues": adminQueues = try int(1...4)
            case "vf_enable": vfEnable = try flag()
            case "vf_migration_capable": vfMigrationCapable = try flag()
            case "admin_fault":
                guard let f = SoftAdminFault(rawValue: value.lowercased()) else {
                    throw .badOption("admin_fault=\(value): expected one of " + SoftAdminFault.allCases.map(\.rawValue).joined(separator: ", "))
                }
                adminFault = f
            default:
                throw .badOption("unknown key '\(key)'; soft:blk understands " + Self.keys.map(\.0).joined(separator: ", "))
            }
        }
        if file != nil && !sizeGiven { size = nil }
        if let size, size % UInt64(blockSize) != 0 {
            throw .badOption("size=\(size): not a multiple of the \(blockSize)-byte block size")
        }
        if faults.statsUnasked && !statsQueue {
            throw .badOption("fault=stats_unasked needs the statistics queue: add stats_vq=on")
        }
        if !packed, queueSize & (queueSize - 1) != 0 {
            throw .badOption("queue_size=\(queueSize): split rings (packed=off) need a power of two")
        }
    }
}

extension String {
    func replacingDash() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}

/// A one-shot fault armed while the device runs (`SoftPCIFunction.inject`): the next request on the
/// queue meets it. For soaks that need faults at random points rather than after N requests.
public enum SoftInjectedFault: Sendable, Equatable, CaseIterable {
    case hostile(HostileUsed)
    /// DEVICE_NEEDS_RESET on the next request.
    case needsReset
    /// The next request is kept and never completed.
    case hold

    public static var allCases: [SoftInjectedFault] { HostileUsed.allCases.map { .hostile($0) } + [.needsReset, .hold] }

    var code: UInt8 {
        switch self {
        case let .hostile(h): UInt8(HostileUsed.allCases.firstIndex(of: h)! + 1)
        case .needsReset: 100
        case .hold: 101
        }
    }

    /// No allocation: the device looks at an armed code on its request path.
    init?(code: UInt8) {
        switch code {
        case 100: self = .needsReset
        case 101: self = .hold
        case 1...UInt8(HostileUsed.allCases.count): self = .hostile(HostileUsed.allCases[Int(code) - 1])
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case let .hostile(h): h.rawValue
        case .needsReset: "needs_reset"
        case .hold: "never_complete"
        }
    }
}

/// How the software owner's admin queue misbehaves, for driver tests.
public enum SoftAdminFault: String, Sendable, CaseIterable {
    /// Every command past the handshake answers status 99, qualifier 0x1234 (both reserved).
    case status
    /// Results come back cut to half their length.
    case short
    /// Commands past the handshake are never completed.
    case hang
    /// Each command answers EAGAIN twice before it is served.
    case eagain
}

/// Why a software device could not be built or used.
public enum SoftDeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    case badOption(String)
    case netOption(String)
    case backing(String)
    case dma(String)

    public var description: String {
        switch self {
        case let .badOption(why): "soft:blk: \(why)"
        case let .netOption(why): "soft:net: \(why)"
        case let .backing(why): "soft:blk backing store: \(why)"
        case let .dma(why): "soft device DMA memory: \(why)"
        }
    }
}

/// Deliberate misbehaviour for conformance tests of the driver (never on by default).
public struct SoftFaults: Sendable, Equatable {
    /// device_status keeps reading its old value for this many reads after a reset write.
    public var resetDelayReads = 0
    /// FEATURES_OK does not stick when the driver accepts any of these bits.
    public var rejectFeatures: [Int] = []
    /// config_generation changes (and the config is rewritten) on this many device-config reads.
    public var configChurnReads = 0
    /// Every MSI-X vector write reads back NO_VECTOR.
    public var refuseVectors = false
    /// After this many requests the device sets DEVICE_NEEDS_RESET and stops.
    public var needsResetAfterRequests: Int?
    /// VERSION_1 is not offered (a legacy-only device).
    public var omitVersion1 = false
    /// The common configuration capability reports this length instead of 0x40.
    public var commonLength: Int?
    /// A capability's BAR window runs past the BAR (the common configuration's).
    public var commonOutsideBAR = false
    /// The capability list loops back on itself.
    public var capabilityLoop = false
    /// The notify capability has a multiplier that is not a power of two.
    public var oddNotifyMultiplier = false
    /// queue_reset keeps reading 1 for this many reads.
    public var queueResetDelayReads = 0
    /// After a queue reset, queue_enable keeps reading 1 (queue_reset reads 0 as if done).
    public var queueEnableStuckAfterReset = false
    /// Requests complete with this status byte instead of the real one.
    public var statusOverride: UInt8?
    /// Hostile modes strike after this many completed requests.
    public var faultAfterRequests = 8
    /// The device returns a buffer as a hostile device would (once).
    public var hostileUsed: HostileUsed?
    /// Requests are taken and never completed.
    public var neverComplete = false
    /// Surprise removal: every register and config read returns all ones.
    public var surpriseRemoval = false
    /// Notification storm: every completion also fires the queue's interrupt 64 times.
    public var notifyStorm = false
    /// The statistics queue returns a buffer the driver never gave it (once).
    public var statsUnasked = false
    public init() {}

    /// The named modes `fault=NAME` takes.
    public static let modeNames = HostileUsed.allCases.map(\.rawValue)
        + ["never_complete", "needs_reset", "status_ff", "config_churn", "notify_storm", "stats_unasked"]

    /// Turns on mode `name`; false when there is no such mode.
    public mutating func enable(_ name: String) -> Bool {
        if let h = HostileUsed(rawValue: name) { hostileUsed = h; return true }
        switch name {
        case "never_complete": neverComplete = true
        case "needs_reset": needsResetAfterRequests = faultAfterRequests
        case "status_ff": surpriseRemoval = true
        case "config_churn": configChurnReads = Int.max
        case "notify_storm": notifyStorm = true
        case "stats_unasked": statsUnasked = true
        default: return false
        }
        return true
    }
}
