import Synchronization
import VirtioCore
import VirtioRing
import VirtioWire

/// The admin queues of a software owner function (`admin.tex`): LIST_QUERY/LIST_USE per group,
/// the legacy interface, capabilities, DEV_PARTS resource objects, device parts and mode set, with
/// real effect on the member functions. It checks the driver's side of each rule and logs what it
/// breaks in `log`, answering as the spec says a device answers.
public final class SoftAdmin: SoftPersonality, @unchecked Sendable {
    /// Members by VF number - 1.
    public let members: [SoftPCIFunction<SoftBlock>]
    public let queueCount: Int
    /// The owner's SR-IOV capability as built (nil: no SR-IOV, the self group only).
    public let sriov: SRIOVState?
    public let fault: SoftAdminFault?
    /// Commands received and driver-side rules broken.
    public let log = ConformanceLog()
    /// What the device supports: DEV_PARTS GET and SET objects at once.
    public static let deviceLimits = DevPartsCapability(getLimit: 4, setLimit: 4)

    struct Object {
        var member: UInt64
        var set: Bool
    }
    struct State {
        var inUse: [UInt16: AdminOpcodeSet] = [:]
        var driverCap: DevPartsCapability?
        var objects: [UInt32: Object] = [:]
        var eagainStreak = 0
    }
    let state = Mutex(State())

    public init(members: [SoftPCIFunction<SoftBlock>], queueCount: Int, sriov: SRIOVState?, fault: SoftAdminFault?) {
        self.members = members
        self.queueCount = queueCount
        self.sriov = sriov
        self.fault = fault
    }

    /// Device reset: objects, driver capabilities and the agreed opcode lists are gone.
    func reset() { state.withLock { $0 = State() } }

    // MARK: SoftPersonality (the admin queues are served like request queues)

    public var deviceType: VirtioDeviceType { .block }
    public var maxQueueSize: Int { 64 }
    public var deviceFeatures: FeatureSet { [] }
    public func configBytes() -> [UInt8] { [] }

    static let rule3 = "admin.tex: the device-readable and device-writable parts are each a multiple of 8 bytes"

    public func handle(queue: Int, chain: AvailableChain, elements: UnsafeMutableBufferPointer<ChainElement>,
                       memory: DMAArena, negotiated: FeatureSet) -> RequestOutcome {
        let io = ChainIO(elements: elements, chain: chain, memory: memory)
        let readable = io.readableBytes
        let capacity = io.writableBytes
        guard readable <= 1 << 20 else { return .malformed("admin command of \(readable) bytes") }
        var request = [UInt8](repeating: 0, count: readable)
        guard request.withUnsafeMutableBytes({ io.read(at: 0, into: $0.baseAddress!, length: readable) }) || readable == 0 else {
            return .malformed("admin command outside DMA memory")
        }
        let opcode = LEReader(request).u16(0)
        // The legacy access commands carry their width in their lengths, so they are exempt.
        let legacyAccess = (AdminOpcode.legacyCommonCfgWrite.rawValue...AdminOpcode.legacyDevCfgRead.rawValue).contains(opcode)
        if readable == 0 || capacity == 0 || (!legacyAccess && (readable % 8 != 0 || capacity % 8 != 0)) {
            log.violation(Self.rule3, "opcode 0x\(String(opcode, radix: 16)): readable \(readable) bytes, writable \(capacity) bytes")
        }
        if fault == .hang, opcode > AdminOpcode.listUse.rawValue { return .held }
        var bytes = respond(request, resultCapacity: max(0, capacity - AdminCommand.statusSize)).encoded
        if fault == .short, opcode > AdminOpcode.listUse.rawValue, bytes.count > AdminCommand.statusSize {
            bytes.removeLast((bytes.count - AdminCommand.statusSize + 1) / 2)
        }
        let n = min(bytes.count, capacity)
        guard bytes.withUnsafeBytes({ io.write(at: 0, from: $0.baseAddress!, length: n) }) else {
            return .malformed("admin result outside DMA memory")
        }
        return .used(UInt32(n))
    }

    // MARK: commands

    static func fail(_ s: AdminStatus, _ q: AdminQualifier) -> AdminResponse { AdminResponse(status: s, qualifier: q, result: []) }
    static func ok(_ result: [UInt8] = []) -> AdminResponse { AdminResponse(status: .ok, qualifier: .ok, result: result) }

    /// The opcodes each group supports. 0x7-0x9 are accepted with the SR-IOV group too (Linux sent them so once).
    func supported(_ g: AdminGroup) -> AdminOpcodeSet {
        switch g {
        case .selfGroup: AdminOpcodeSet([0x0, 0x1, 0x7, 0x8, 0x9])
        case .sriov: AdminOpcodeSet(Array(0x0...0x11))
        }
    }

    func respond(_ request: [UInt8], resultCapacity: Int) -> AdminResponse {
        guard let c = AdminCommand(readable: request, resultCapacity: resultCapacity) else {
            return Self.fail(.einval, .invalidCommand)
        }
        log.record(.adminCommand(opcode: c.opcode, group: c.group, member: c.memberID))
        // Precedence (admin.tex): group, then opcode, then member.
        guard let group = AdminGroup(rawValue: c.group), group == .selfGroup || (sriov.map { $0.vfEnable } ?? false) else {
            return Self.fail(.einval, .invalidGroup)
        }
        guard supported(group).contains(c.opcode) else { return Self.fail(.einval, .invalidOpcode) }
        let isHandshake = c.opcode <= AdminOpcode.listUse.rawValue
        let used = state.withLock { $0.inUse[c.group] }
        if !isHandshake, !(used?.contains(c.opcode) ?? false) {
            log.violation("admin.tex: the driver MUST NOT send an opcode that is not in the LIST_USE set (LIST_QUERY, LIST_USE first)",
                          "opcode 0x\(String(c.opcode, radix: 16)) sent for group \(group) with LIST_USE \(used?.opcodes.description ?? "not yet sent")")
            return Self.fail(.einval, .invalidOpcode)
        }
        let takesMember = !isHandshake && !(0x7...0x9).contains(c.opcode)
        if takesMember {
            switch group {
            case .selfGroup: if c.memberID != 0 { return Self.fail(.einval, .invalidMember) }
            case .sriov:
                guard c.memberID >= 1, c.memberID <= UInt64(min(sriov?.numVFs ?? 0, members.count)) else {
                    return Self.fail(.einval, .invalidMember)
                }
            }
        }
        if fault == .status, !isHandshake { return Self.fail(.reserved(99), .reserved(0x1234)) }
        if fault == .eagain {
            let again = state.withLock { s -> Bool in
                s.eagainStreak += 1
                if s.eagainStreak <= 2 { return true }
                s.eagainStreak = 0
                return false
            }
            if again { return Self.fail(.eagain, .tryAgain) }
        }
        let data = LEReader(c.data)
        let member: SoftPCIFunction<SoftBlock>? = group == .sriov && takesMember ? members[Int(c.memberID) - 1] : nil
        switch AdminOpcode(rawValue: c.opcode)! {
        case .listQuery:
            return Self.ok(supported(group).encoded)
        case .listUse:
            let set = AdminOpcodeSet(decoding: c.data)
            guard set.isSubset(of: supported(group)), set.contains(0), set.contains(1) else {
                log.violation("admin.tex: LIST_USE names a subset of LIST_QUERY's result", "LIST_USE \(set.opcodes)")
                return Self.fail(.einval, .invalidField)
            }
            state.withLock { $0.inUse[c.group] = set }
            return Self.ok()
        case .legacyCommonCfgWrite:
            guard c.data.count > 8 else { return Self.fail(.einval, .invalidField) }
            if member!.legacyCommonWrite(offset: Int(data.u8(0)), data: Array(c.data[8...])) != nil {
                return Self.fail(.einval, .invalidField)
            }
            return Self.ok()
        case .legacyCommonCfgRead:
            guard let bytes = member!.legacyCommonRead(offset: Int(data.u8(0)), width: resultCapacity) else {
                return Self.fail(.einval, .invalidField)
            }
            return Self.ok(bytes)
        case .legacyDevCfgWrite:
            return Self.fail(.einval, .invalidField)  // virtio-blk config has no field a driver may write here
        case .legacyDevCfgRead:
            guard let bytes = member!.legacyDeviceRead(offset: Int(data.u8(0)), width: resultCapacity) else {
                return Self.fail(.einval, .invalidField)
            }
            return Self.ok(bytes)
        case .legacyNotifyInfo:
            // The member's own doorbell window; the list ends with a flags-0 entry.
            let entries = [LegacyNotifyEntry(flags: 2, bar: UInt8(SoftBAR.virtio), offset: UInt64(SoftBAR.notify)),
                           LegacyNotifyEntry(flags: 0, bar: 0, offset: 0)]
            return Self.ok(entries.flatMap(\.encoded) + [UInt8](repeating: 0, count: 32))
        case .capIDListQuery:
            return Self.ok(AdminOpcodeSet([AdminCapability.devParts]).encoded)
        case .deviceCapGet:
            guard data.u16(0) == AdminCapability.devParts else { return Self.fail(.enxio, .invalidField) }
            return Self.ok(Self.deviceLimits.encoded)
        case .driverCapSet:
            guard data.u16(0) == AdminCapability.devParts else { return Self.fail(.enxio, .invalidField) }
            let cap = DevPartsCapability(decoding: Array(c.data.dropFirst(8)))
            guard cap.getLimit <= Self.deviceLimits.getLimit, cap.setLimit <= Self.deviceLimits.setLimit else {
                return Self.fail(.einval, .invalidField)
            }
            return state.withLock { s in
                guard s.objects.isEmpty else { return Self.fail(.ebusy, .invalidField) }
                s.driverCap = cap
                return Self.ok()
            }
        case .resourceObjCreate, .resourceObjModify, .resourceObjQuery, .resourceObjDestroy:
            return objectCommand(c, group: group)
        case .devPartsMetadataGet, .devPartsGet, .devPartsSet:
            return partsCommand(c, member: member!, resultCapacity: resultCapacity)
        case .devModeSet:
            let flags = data.u8(0)
            guard flags & ~1 == 0 else { return Self.fail(.einval, .invalidField) }
            if flags & 1 != 0 { member!.stopDevice() } else { member!.resumeDevice() }
            return Self.ok()
        }
    }

    func objectCommand(_ c: AdminCommand, group: AdminGroup) -> AdminResponse {
        let d = LEReader(c.data)
        guard c.data.count >= 8 else { return Self.fail(.einval, .invalidCommand) }
        guard d.u16(0) == ResourceObjectType.devParts, group == .sriov else { return Self.fail(.einval, .invalidField) }
        let id = d.u32(4)
        return state.withLock { s -> AdminResponse in
            switch AdminOpcode(rawValue: c.opcode)! {
            case .resourceObjCreate, .resourceObjModify:
                let kind = d.u8(16)
                guard kind <= 1, c.data.count >= 24 else { return Self.fail(.einval, .invalidField) }
                if c.opcode == AdminOpcode.resourceObjModify.rawValue {
                    guard let o = s.objects[id], o.member == c.memberID else { return Self.fail(.enxio, .invalidField) }
                    s.objects[id]!.set = kind == 1
                    return Self.ok()
                }
                guard s.objects[id] == nil else { return Self.fail(.eexist, .invalidField) }
                let cap = s.driverCap ?? DevPartsCapability(getLimit: 0, setLimit: 0)  // unset: 0 (admin.tex SHOULD)
                let limit = Int(kind == 1 ? cap.setLimit : cap.getLimit)
                guard Int(id) < max(Int(cap.getLimit), Int(cap.setLimit)),
                      s.objects.values.filter({ $0.set == (kind == 1) }).count < limit else {
                    return Self.fail(.enospc, .noResource)
                }
                s.objects[id] = Object(member: c.memberID, set: kind == 1)
                return Self.ok()
            case .resourceObjQuery:
                guard let o = s.objects[id], o.member == c.memberID else { return Self.fail(.enxio, .invalidField) }
                return Self.ok(AdminRequest.devPartsObject(set: o.set))
            default:
                guard let o = s.objects[id], o.member == c.memberID else { return Self.fail(.enxio, .invalidField) }
                s.objects[id] = nil
                return Self.ok()
            }
        }
    }

    func partsCommand(_ c: AdminCommand, member: SoftPCIFunction<SoftBlock>, resultCapacity: Int) -> AdminResponse {
        let d = LEReader(c.data)
        guard d.u16(0) == ResourceObjectType.devParts else { return Self.fail(.einval, .invalidField) }
        let object = state.withLock { $0.objects[d.u32(4)] }
        guard let object, object.member == c.memberID else { return Self.fail(.enxio, .invalidField) }
        let wantSet = c.opcode == AdminOpcode.devPartsSet.rawValue
        guard object.set == wantSet else { return Self.fail(.einval, .invalidField) }
        switch AdminOpcode(rawValue: c.opcode)! {
        case .devPartsMetadataGet:
            let parts = member.memberState().parts
            var w = LEWriter()
            switch d.u8(8) {
            case PartsMetadataKind.size.rawValue: w.u32(UInt32(DevicePart.encode(parts).count))
            case PartsMetadataKind.count.rawValue: w.u32(UInt32(parts.count))
            case PartsMetadataKind.list.rawValue:
                w.u32(UInt32(parts.count))
                w.zeros(4)
                for p in parts { w.bytes(p.header) }
                guard w.out.count <= resultCapacity else { return Self.fail(.enomem, .noResource) }
            default: return Self.fail(.einval, .invalidField)
            }
            w.pad(to: 8)
            return Self.ok(w.out)
        case .devPartsGet:
            var parts = member.memberState().parts
            switch d.u8(8) {
            case 1: break
            case 0:
                let wanted = (try? DevicePart.decode(Array(c.data.dropFirst(16)))) ?? []
                parts = parts.filter { p in wanted.contains { $0.type == p.type && $0.selector == p.selector } }
            default: return Self.fail(.einval, .invalidField)
            }
            return Self.ok(DevicePart.encode(parts))
        default:
            let parts: [DevicePart]
            let s: MemberState
            do {
                parts = try DevicePart.decode(Array(c.data.dropFirst(8)))
                s = try MemberState(parts: parts)
                // A block device defines no device-type parts: a mandatory one cannot be applied.
                if let p = s.deviceTypeParts.first(where: { $0.flags & DevicePart.optional == 0 }) {
                    log.record(.partsRefused("\(DevicePartType.name(p.type)) is mandatory and unknown to virtio-blk"))
                    return Self.fail(.einval, .invalidField)
                }
            } catch {
                log.violation("admin-cmds-device-parts.tex: DEV_PARTS_SET carries well-formed parts in the required order", "\(error)")
                return Self.fail(.einval, .invalidField)
            }
            if let why = member.applyMemberState(s) {
                log.record(.partsRefused(why))
                return member.isStopped ? Self.fail(.einval, .invalidField) : Self.fail(.ebusy, .invalidField)
            }
            return Self.ok()
        }
    }
}
