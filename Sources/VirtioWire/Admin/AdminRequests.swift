/// Typed admin commands 0x2-0x11: request encoders and result decoders (layouts from
/// admin-cmds-legacy-interface.tex, admin-cmds-capabilities.tex, admin-cmds-resource-objects.tex,
/// admin-cmds-device-parts.tex). Each builds a whole `AdminCommand`, so tests can check bytes.
public enum AdminRequest {
    /// LEGACY_{COMMON,DEV}_CFG_WRITE: `u8 offset; u8 reserved[7]; u8 data[]`.
    public static func legacyWrite(device: Bool, member: UInt64, offset: UInt8, data: [UInt8]) -> AdminCommand {
        var w = LEWriter()
        w.u8(offset)
        w.zeros(7)
        w.bytes(data)
        return AdminCommand(opcode: (device ? AdminOpcode.legacyDevCfgWrite : .legacyCommonCfgWrite).rawValue,
                            group: AdminGroup.sriov.rawValue, memberID: member, data: w.out, exactLength: true)
    }

    /// LEGACY_{COMMON,DEV}_CFG_READ: `u8 offset`; the result buffer's length is the read's length.
    public static func legacyRead(device: Bool, member: UInt64, offset: UInt8, length: Int) -> AdminCommand {
        AdminCommand(opcode: (device ? AdminOpcode.legacyDevCfgRead : .legacyCommonCfgRead).rawValue,
                     group: AdminGroup.sriov.rawValue, memberID: member, data: [offset], resultCapacity: length,
                     exactLength: true)
    }

    /// LEGACY_NOTIFY_INFO: no data; 4 entries of 16 bytes back.
    public static func legacyNotifyInfo(member: UInt64) -> AdminCommand {
        AdminCommand(opcode: AdminOpcode.legacyNotifyInfo.rawValue, group: AdminGroup.sriov.rawValue, memberID: member,
                     resultCapacity: 64)
    }

    /// CAP_ID_LIST_QUERY (self group): a bitmap of capability ids.
    public static func capIDListQuery() -> AdminCommand {
        AdminCommand(opcode: AdminOpcode.capIDListQuery.rawValue, resultCapacity: 8)
    }

    /// DEVICE_CAP_GET: `le16 id; u8 reserved[6]`.
    public static func deviceCapGet(id: UInt16, resultCapacity: Int = 64) -> AdminCommand {
        var w = LEWriter()
        w.u16(id)
        w.zeros(6)
        return AdminCommand(opcode: AdminOpcode.deviceCapGet.rawValue, data: w.out, resultCapacity: resultCapacity)
    }

    /// DRIVER_CAP_SET: `le16 id; u8 reserved[6]; cap_specific_data`.
    public static func driverCapSet(id: UInt16, data: [UInt8]) -> AdminCommand {
        var w = LEWriter()
        w.u16(id)
        w.zeros(6)
        w.bytes(data)
        return AdminCommand(opcode: AdminOpcode.driverCapSet.rawValue, data: w.out)
    }

    /// `struct virtio_admin_cmd_resource_obj_cmd_hdr`: `le16 type; u8 reserved[2]; le32 id`.
    static func objectHeader(_ w: inout LEWriter, type: UInt16, id: UInt32) {
        w.u16(type)
        w.zeros(2)
        w.u32(id)
    }

    /// RESOURCE_OBJ_CREATE: header, `le64 flags` (0), object-specific data.
    public static func resourceCreate(group: AdminGroup, member: UInt64, type: UInt16, id: UInt32,
                                      specific: [UInt8]) -> AdminCommand {
        var w = LEWriter()
        objectHeader(&w, type: type, id: id)
        w.u64(0)
        w.bytes(specific)
        return AdminCommand(opcode: AdminOpcode.resourceObjCreate.rawValue, group: group.rawValue, memberID: member,
                            data: w.out)
    }

    /// RESOURCE_OBJ_MODIFY: header, flags, new object-specific data.
    public static func resourceModify(group: AdminGroup, member: UInt64, type: UInt16, id: UInt32,
                                      specific: [UInt8]) -> AdminCommand {
        var c = resourceCreate(group: group, member: member, type: type, id: id, specific: specific)
        c.opcode = AdminOpcode.resourceObjModify.rawValue
        return c
    }

    /// RESOURCE_OBJ_QUERY: header, flags; the object's specific data back.
    public static func resourceQuery(group: AdminGroup, member: UInt64, type: UInt16, id: UInt32,
                                     resultCapacity: Int = 64) -> AdminCommand {
        var c = resourceCreate(group: group, member: member, type: type, id: id, specific: [])
        c.opcode = AdminOpcode.resourceObjQuery.rawValue
        c.resultCapacity = resultCapacity
        return c
    }

    /// RESOURCE_OBJ_DESTROY: the header alone.
    public static func resourceDestroy(group: AdminGroup, member: UInt64, type: UInt16, id: UInt32) -> AdminCommand {
        var w = LEWriter()
        objectHeader(&w, type: type, id: id)
        return AdminCommand(opcode: AdminOpcode.resourceObjDestroy.rawValue, group: group.rawValue, memberID: member,
                            data: w.out)
    }

    /// The DEV_PARTS object's specific data: `u8 type (0 GET, 1 SET); u8 reserved[7]`.
    public static func devPartsObject(set: Bool) -> [UInt8] { [set ? 1 : 0] + [UInt8](repeating: 0, count: 7) }

    /// DEV_PARTS_METADATA_GET: object header, `u8 type (0 SIZE, 1 COUNT, 2 LIST); u8 reserved[7]`.
    public static func devPartsMetadataGet(member: UInt64, object: UInt32, kind: PartsMetadataKind,
                                           resultCapacity: Int = 8) -> AdminCommand {
        var w = LEWriter()
        objectHeader(&w, type: ResourceObjectType.devParts, id: object)
        w.u8(kind.rawValue)
        w.zeros(7)
        return AdminCommand(opcode: AdminOpcode.devPartsMetadataGet.rawValue, group: AdminGroup.sriov.rawValue,
                            memberID: member, data: w.out, resultCapacity: resultCapacity)
    }

    /// DEV_PARTS_GET: object header, `u8 type (0 SELECTED, 1 ALL); u8 reserved[7]`, then headers when SELECTED.
    public static func devPartsGet(member: UInt64, object: UInt32, selected: [DevicePart]? = nil,
                                   resultCapacity: Int) -> AdminCommand {
        var w = LEWriter()
        objectHeader(&w, type: ResourceObjectType.devParts, id: object)
        w.u8(selected == nil ? 1 : 0)
        w.zeros(7)
        for p in selected ?? [] { w.bytes(p.header) }
        return AdminCommand(opcode: AdminOpcode.devPartsGet.rawValue, group: AdminGroup.sriov.rawValue, memberID: member,
                            data: w.out, resultCapacity: resultCapacity)
    }

    /// DEV_PARTS_SET: object header, then the parts.
    public static func devPartsSet(member: UInt64, object: UInt32, parts: [UInt8]) -> AdminCommand {
        var w = LEWriter()
        objectHeader(&w, type: ResourceObjectType.devParts, id: object)
        w.bytes(parts)
        return AdminCommand(opcode: AdminOpcode.devPartsSet.rawValue, group: AdminGroup.sriov.rawValue, memberID: member,
                            data: w.out)
    }

    /// DEV_MODE_SET: `u8 flags` (bit 0 STOPPED; 0 resumes).
    public static func devModeSet(member: UInt64, stopped: Bool) -> AdminCommand {
        AdminCommand(opcode: AdminOpcode.devModeSet.rawValue, group: AdminGroup.sriov.rawValue, memberID: member,
                     data: [stopped ? 1 : 0])
    }
}

/// Resource object types (`admin-cmds-resource-objects.tex`).
public enum ResourceObjectType {
    public static let devParts: UInt16 = 0x000
}

/// Capability ids (`admin-cmds-capabilities.tex`; VIRTIO_DEV_PARTS_CAP from Linux uapi).
public enum AdminCapability {
    public static let devParts: UInt16 = 0x0000
}

/// DEV_PARTS_METADATA_GET's `type`.
public enum PartsMetadataKind: UInt8, Sendable, Codable {
    case size = 0, count = 1, list = 2
}

/// One LEGACY_NOTIFY_INFO entry: `u8 flags (0 end, 1 owner, 2 member); u8 bar; u8 pad[6]; le64 offset`.
public struct LegacyNotifyEntry: Sendable, Equatable, Codable {
    public var flags: UInt8
    public var bar: UInt8
    public var offset: UInt64
    public init(flags: UInt8, bar: UInt8, offset: UInt64) {
        self.flags = flags
        self.bar = bar
        self.offset = offset
    }
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u8(flags)
        w.u8(bar)
        w.zeros(6)
        w.u64(offset)
        return w.out
    }
    public var owner: String { flags == 1 ? "owner" : flags == 2 ? "member" : flags == 0 ? "end" : "reserved(\(flags))" }

    /// Entries up to the first with flags 0 (the spec's end marker); a short result reads as zeros.
    public static func decode(_ b: [UInt8]) -> [LegacyNotifyEntry] {
        let r = LEReader(b)
        var out: [LegacyNotifyEntry] = []
        for i in 0..<4 {
            let e = LegacyNotifyEntry(flags: r.u8(i * 16), bar: r.u8(i * 16 + 1), offset: r.u64(i * 16 + 8))
            if e.flags == 0 { break }
            out.append(e)
        }
        return out
    }
}

/// The DEV_PARTS capability: how many GET and SET objects may exist at once.
public struct DevPartsCapability: Sendable, Equatable, Codable {
    public var getLimit: UInt8
    public var setLimit: UInt8
    public init(getLimit: UInt8, setLimit: UInt8) {
        self.getLimit = getLimit
        self.setLimit = setLimit
    }
    public var encoded: [UInt8] { [getLimit, setLimit] }
    public init(decoding b: [UInt8]) {
        let r = LEReader(b)
        self.init(getLimit: r.u8(0), setLimit: r.u8(1))
    }
}

/// A bitmap of le64 words as a list of set bit numbers (capability ids, opcodes).
public func bitmapMembers(_ bytes: [UInt8]) -> [UInt16] { AdminOpcodeSet(decoding: bytes).opcodes }
