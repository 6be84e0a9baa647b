import VirtioCore
import VirtioDrivers
import VirtioRing

/// The device-side rules the suite checks, by the spec section (and .tex source) they live in.
/// Ring rules come from `RingViolation.rule`; these are the rest.
enum Clause {
    static let reset = "Device Status Field / Device Reset (content.tex, transport-pci.tex): the device MUST present 0 in device_status once a reset written as 0 is done"
    static let version1 = "Feature Bits / Device Requirements (content.tex): a non-transitional device MUST offer VIRTIO_F_VERSION_1"
    static let acceptSubset = "Feature Bits / Device Requirements (content.tex): the device SHOULD accept any valid subset of the features it offered"
    static let configGeneration = "Device Configuration Space (content.tex): config_generation changes only when the configuration changed; reads must settle"
    static let blkConfig = "Block Device / Device configuration layout (device-types/blk): the configuration fields must hold values the device supports"
    static let splitQueueSize = "Virtio Over PCI Bus / Common configuration (transport-pci.tex): unless VIRTIO_F_RING_PACKED is negotiated the device MUST present 0 or a power of 2 in queue_size"
    static let blkStatus = "Block Device / Device Operation (device-types/blk): the device MUST write the status byte (OK, IOERR or UNSUPP) into the last device-writable byte"
    static let blkCompletes = "Block Device / Device Operation (device-types/blk): a well-formed in-range request completes with VIRTIO_BLK_S_OK and moves the data"
    static let completes = "Virtqueues (content.tex): the device uses each available buffer; none may stay with it while the driver waits"
    static let needsReset = "Device Status Field (content.tex): DEVICE_NEEDS_RESET means the device hit an error it cannot recover from without a reset"
    static let removed = "PCI Express: device_status reads 0xFF when the function is gone (surprise removal); nothing more can be checked"
    static let inOrder = "In-order use of descriptors (content.tex, VIRTIO_F_IN_ORDER): the device MUST use buffers in the order they were made available"
    static let notifyWhenAsked = "Used Buffer Notification Suppression (split-ring.tex / packed-ring.tex): with notifications enabled (flags 0, or used_event reached) the device MUST send a used buffer notification"
    static let quietWhenSuppressed = "Used Buffer Notification Suppression (split-ring.tex / packed-ring.tex): with notifications disabled the device SHOULD NOT send used buffer notifications"
    static let queueReset = "Virtqueue Reset (content.tex, transport-pci.tex): after 1 is written to queue_reset the device MUST reset the queue and, once done, present 0 in queue_reset and queue_enable"
    static let adminListOpcodes = "Group administration commands (admin.tex): every group type supports VIRTIO_ADMIN_CMD_LIST_QUERY and LIST_USE; LIST_QUERY reports both"
    static let adminStatus = "Administration virtqueues (admin.tex): status and status_qualifier hold defined values (a driver reads any other as a command error)"
    static let adminResult = "Administration virtqueues (admin.tex): the device writes the whole command_specific_result of a successful command (the driver zero-fills what is missing)"
    static let adminCompletes = "Administration virtqueues (admin.tex): the device completes each admin command"
    static let netConfig = "Network Device / Device configuration layout (device-types/net): the configuration fields hold values the device supports"
    static let netControlAccepted = "Network Device / Control Virtqueue (device-types/net): a command of a negotiated class is carried out and acked VIRTIO_NET_OK"
    static let netDelivers = "Network Device / Device Operation (device-types/net): a transmitted frame reaches the link, and a frame from the link reaches a posted receive buffer"
    static let checker = "not the device: virtioctl check itself could not run this step (please report it)"
}

/// Turns what the driver saw into findings. Errors a user caused (bad options) are not device findings.
enum Classify {
    static func finding(_ error: BlockError) -> CheckFinding {
        switch error {
        case let .virtio(e): return finding(e)
        case let .timeout(ms, what):
            return CheckFinding(.failure, clause: Clause.completes, "no completion within \(ms) ms for \(what)")
        case let .invalidStatus(b):
            return CheckFinding(.must, clause: Clause.blkStatus, "status byte \(b) is not OK, IOERR or UNSUPP")
        case let .statusNotWritten(len):
            return CheckFinding(.must, clause: Clause.blkStatus, "request returned (used length \(len)) with its status byte unwritten")
        case let .ioError(sector):
            return CheckFinding(.failure, clause: Clause.blkCompletes, "VIRTIO_BLK_S_IOERR for an in-range request at sector \(sector)")
        case let .deviceUnsupported(what):
            return CheckFinding(.failure, clause: Clause.blkCompletes, "VIRTIO_BLK_S_UNSUPP for \(what), which was negotiated")
        case let .invalidConfig(why):
            return CheckFinding(.must, clause: Clause.blkConfig, why)
        case .queueFull, .tooManySegments, .outOfRange, .misaligned, .invalidRequest, .noSuchQueue, .queueCount:
            return CheckFinding(.failure, clause: Clause.checker, error.description)
        case let .queueResetFailed(_, e):  // the queue is named in the VirtioError
            return finding(e)
        default:
            return CheckFinding(.failure, clause: Clause.completes, error.description)
        }
    }

    static func finding(_ result: BlockResult, sector: UInt64, what: String) -> CheckFinding {
        switch result {
        case .ok: CheckFinding(.failure, clause: Clause.checker, "a successful completion taken for a failure")
        case .ioError: finding(BlockError.ioError(sector: sector))
        case .unsupported: finding(BlockError.deviceUnsupported(what))
        case let .protocolError(e): finding(e)
        }
    }

    static func finding(_ e: VirtioError) -> CheckFinding {
        switch e {
        case let .ring(_, .broken(v)): return CheckFinding(.must, clause: v.rule, v.detail)
        case .deviceNeedsReset: return CheckFinding(.failure, clause: Clause.needsReset, "the device set DEVICE_NEEDS_RESET")
        case .deviceGone: return CheckFinding(.failure, clause: Clause.removed, "device_status reads 0xFF: the function is gone")
        case let .deviceFailed(s): return CheckFinding(.failure, clause: Clause.needsReset, "device_status 0x\(String(s, radix: 16)) has FAILED set")
        case .resetTimeout(0xFF): return finding(.deviceGone)
        case let .resetTimeout(s):
            return CheckFinding(.must, clause: Clause.reset, "device_status still reads 0x\(String(s, radix: 16)) after the reset")
        case .legacyDevice: return CheckFinding(.must, clause: Clause.version1, "VIRTIO_F_VERSION_1 is not offered")
        case let .featuresRejected(names):
            return CheckFinding(.should, clause: Clause.acceptSubset, "FEATURES_OK did not stick for the offered subset [\(names.joined(separator: " "))]")
        case let .configUnstable(n):
            return CheckFinding(.failure, clause: Clause.configGeneration, "config_generation changed during each of \(n) reads")
        case let .queueResetTimeout(q):
            return CheckFinding(.must, clause: Clause.queueReset, "queue \(q): queue_reset still reads 1: the reset never finished")
        case let .queueStillEnabled(q):
            return CheckFinding(.must, clause: Clause.queueReset, "queue \(q): queue_reset reads 0 but queue_enable still reads 1")
        case let .dma(e):
            return CheckFinding(.failure, clause: Clause.checker, "out of DMA memory for another attach (\(e)); run with a larger --dma")
        case let .invalidQueueSize(q, size, max, packed) where !packed && max & (max &- 1) != 0:
            return CheckFinding(.must, clause: Clause.splitQueueSize, "queue \(q) presents queue_size \(max) (asked \(size)) on a split ring")
        default: return CheckFinding(.failure, clause: Clause.completes, e.description)
        }
    }

    static func finding(_ e: AdminError) -> CheckFinding {
        switch e {
        case let .ring(_, .broken(v)): return CheckFinding(.must, clause: v.rule, "admin queue: \(v.detail)")
        case let .setup(v): return finding(v)
        case let .timeout(op, q, ms):
            return CheckFinding(.failure, clause: Clause.adminCompletes, "\(AdminError.name(op)) on admin queue \(q) not completed within \(ms) ms")
        case let .shortStatus(op, len):
            return CheckFinding(.must, clause: Clause.adminStatus, "\(AdminError.name(op)): used length \(len) is shorter than the 8-byte status")
        case let .handshake(why): return CheckFinding(.must, clause: Clause.adminListOpcodes, why)
        case let .commandFailed(op, _, _, s, q):
            if case .reserved = s {
                return CheckFinding(.should, clause: Clause.adminStatus, "\(AdminError.name(op)) answered reserved status \(s.raw) (qualifier \(q.raw))")
            }
            if case .reserved = q {
                return CheckFinding(.should, clause: Clause.adminStatus, "\(AdminError.name(op)) answered reserved status_qualifier \(q.raw)")
            }
            if s == .eagain {
                return CheckFinding(.failure, clause: Clause.adminCompletes, "\(AdminError.name(op)) kept answering EAGAIN")
            }
            return CheckFinding(.failure, clause: Clause.adminCompletes, e.description)
        default: return CheckFinding(.failure, clause: Clause.adminCompletes, e.description)
        }
    }
}
