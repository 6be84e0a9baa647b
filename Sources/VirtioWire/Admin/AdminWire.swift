
/// Admin command opcodes of virtio 1.3/1.4 (`admin.tex`): 0x0-0x6 in 1.3, 0x7-0x11 in 1.4.
public enum AdminOpcode: UInt16, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case listQuery = 0x0
    case listUse = 0x1
    case legacyCommonCfgWrite = 0x2
    case legacyCommonCfgRead = 0x3
    case legacyDevCfgWrite = 0x4
    case legacyDevCfgRead = 0x5
    case legacyNotifyInfo = 0x6
    case capIDListQuery = 0x7
    case deviceCapGet = 0x8
    case driverCapSet = 0x9
    case resourceObjCreate = 0xa
    /// The opcode table of `admin.tex` has QUERY at 0xb and MODIFY at 0xc (the command text of
    /// admin-cmds-resource-objects.tex says the reverse); the table is what we speak.
    case resourceObjQuery = 0xb
    case resourceObjModify = 0xc
    case resourceObjDestroy = 0xd
    case devPartsMetadataGet = 0xe
    case devPartsGet = 0xf
    case devPartsSet = 0x10
    case devModeSet = 0x11

    /// The spec's name without the VIRTIO_ADMIN_CMD_ prefix.
    public var description: String {
        switch self {
        case .listQuery: "LIST_QUERY"
        case .listUse: "LIST_USE"
        case .legacyCommonCfgWrite: "LEGACY_COMMON_CFG_WRITE"
        case .legacyCommonCfgRead: "LEGACY_COMMON_CFG_READ"
        case .legacyDevCfgWrite: "LEGACY_DEV_CFG_WRITE"
        case .legacyDevCfgRead: "LEGACY_DEV_CFG_READ"
        case .legacyNotifyInfo: "LEGACY_NOTIFY_INFO"
        case .capIDListQuery: "CAP_ID_LIST_QUERY"
        case .deviceCapGet: "DEVICE_CAP_GET"
        case .driverCapSet: "DRIVER_CAP_SET"
        case .resourceObjCreate: "RESOURCE_OBJ_CREATE"
        case .resourceObjModify: "RESOURCE_OBJ_MODIFY"
        case .resourceObjQuery: "RESOURCE_OBJ_QUERY"
        case .resourceObjDestroy: "RESOURCE_OBJ_DESTROY"
        case .devPartsMetadataGet: "DEV_PARTS_METADATA_GET"
        case .devPartsGet: "DEV_PARTS_GET"
        case .devPartsSet: "DEV_PARTS_SET"
        case .devModeSet: "DEV_MODE_SET"
        }
    }

    /// Names a person may type: `LIST_QUERY`, `list-query`, `list_query`, or a number (`0x11`, `17`).
    public static func parse(_ text: String) -> UInt16? {
        let t = String(text.uppercased().map { $0 == "-" ? "_" : $0 })
        if let o = allCases.first(where: { $0.description == t || "VIRTIO_ADMIN_CMD_" + $0.description == t }) {
            return o.rawValue
        }
        return parseNumber(text).flatMap { UInt16(exactly: $0) }
    }
}

/// Admin group types (`admin.tex` "Group administration commands").
public enum AdminGroup: UInt16, Sendable, Codable, CustomStringConvertible {
    /// The device itself (1.4); member id 0.
    case selfGroup = 0
    /// SR-IOV: the owner (PF) manages its VFs; member id = VF number 1...NumVFs.
    case sriov = 1
    public var description: String { self == .selfGroup ? "self" : "sr-iov" }
}

/// The admin `status` field: Linux errno numbers. Values the spec does not define are
/// handled as EINVAL (`admin.tex`: the driver MUST treat a reserved status as EINVAL).
public enum AdminStatus: Sendable, Equatable, CustomStringConvertible {
    case ok, enxio, eagain, enomem, ebusy, eexist, einval, enospc
    /// EEXIST (17) is what the resource-object text asks for on a duplicate id, though the
    /// status table omits it; it is the Linux errno.
    case reserved(UInt16)

    public init(_ raw: UInt16) {
        switch raw {
        case 0: self = .ok
        case 6: self = .enxio
        case 11: self = .eagain
        case 12: self = .enomem
        case 16: self = .ebusy
        case 17: self = .eexist
        case 22: self = .einval
        case 28: self = .enospc
        default: self = .reserved(raw)
        }
    }

    public var raw: UInt16 {
        switch self {
        case .ok: 0
        case .enxio: 6
        case .eagain: 11
        case .enomem: 12
        case .ebusy: 16
        case .eexist: 17
        case .einval: 22
        case .enospc: 28
        case let .reserved(v): v
        }
    }

    /// What the driver acts on: a reserved value counts as EINVAL.
    public var effective: AdminStatus {
        if case .reserved = self { return .einval }
        return self
    }

    public var description: String {
        switch self {
        case .ok: "OK"
        case .enxio: "ENXIO (no such member or resource)"
        case .eagain: "EAGAIN (try again)"
        case .enomem: "ENOMEM (device out of memory)"
        case .ebusy: "EBUSY (busy)"
        case .eexist: "EEXIST (already exists)"
        case .einval: "EINVAL (invalid)"
        case .enospc: "ENOSPC (no space)"
        case let .reserved(v): "reserved status \(v) (handled as EINVAL)"
        }
    }
}

/// The admin `status_qualifier`; reserved values are handled as INVALID_COMMAND.
public enum AdminQualifier: Sendable, Equatable, CustomStringConvertible {
    case ok, invalidCommand, invalidOpcode, invalidField, invalidGroup, invalidMember, noResource, tryAgain
    case reserved(UInt16)

    public init(_ raw: UInt16) {
        switch raw {
        case 0: self = .ok
        case 1: self = .invalidCommand
        case 2: self = .invalidOpcode
        case 3: self = .invalidField
        case 4: self = .invalidGroup
        case 5: self = .invalidMember
        case 6: self = .noResource
        case 7: self = .tryAgain
        default: self = .reserved(raw)
        }
    }

    public var raw: UInt16 {
        switch self {
        case .ok: 0
        case .invalidCommand: 1
        case .invalidOpcode: 2
        case .invalidField: 3
        case .invalidGroup: 4
        case .invalidMember: 5
        case .noResource: 6
        case .tryAgain: 7
        case let .reserved(v): v
        }
    }

    public var effective: AdminQualifier {
        if case .reserved = self { return .invalidCommand }
        return self
    }

    public var description: String {
        switch self {
        case .ok: "OK"
        case .invalidCommand: "INVALID_COMMAND"
        case .invalidOpcode: "INVALID_OPCODE"
        case .invalidField: "INVALID_FIELD"
        case .invalidGroup: "INVALID_GROUP"
        case .invalidMember: "INVALID_MEMBER"
        case .noResource: "NORESOURCE"
        case .tryAgain: "TRYAGAIN"
        case let .reserved(v): "reserved qualifier \(v) (handled as INVALID_COMMAND)"
        }
    }
}

/// One admin command as it goes on the wire (`admin.tex` struct virtio_admin_cmd): a
/// device-readable part (24-byte header, then command data) and a device-writable part
/// (8-byte status, then room for the result). Both parts are padded to multiples of 8.
public struct AdminCommand: Sendable, Equatable {
    public var opcode: UInt16
    public var group: UInt16
    public var memberID: UInt64
    public var data: [UInt8]
    /// Bytes of result the driver makes room for.
    public var resultCapacity: Int
    /// Both parts exactly as long as their contents, unpadded. The legacy access commands need it:
    /// their data length is the write's width and their result length the read's, so padding to 8
    /// would change what they do (Linux sends them unpadded; the 8-byte rule cannot hold for them).
    public var exactLength: Bool

    public static let headerSize = 24
    public static let statusSize = 8

    public init(opcode: UInt16, group: UInt16 = AdminGroup.selfGroup.rawValue, memberID: UInt64 = 0, data: [UInt8] = [],
                resultCapacity: Int = 0, exactLength: Bool = false) {
        self.opcode = opcode
        self.group = group
        self.memberID = memberID
        self.data = data
        self.resultCapacity = resultCapacity
        self.exactLength = exactLength
    }

    /// The device-readable part: `le16 opcode; le16 group_type; u8 reserved1[12]; le64 group_member_id;
    /// command_specific_data`, zero-padded to a multiple of 8 (`admin.tex`: the driver MUST).
    public var readable: [UInt8] {
        var w = LEWriter()
        w.u16(opcode)
        w.u16(group)
        w.zeros(12)
        w.u64(memberID)
        w.bytes(data)
        if !exactLength { w.pad(to: 8) }
        return w.out
    }

    /// Length of the device-writable part: the status, then the result, rounded up to 8.
    public var writableLength: Int { Self.statusSize + (exactLength ? resultCapacity : (resultCapacity + 7) & ~7) }

    /// Decodes a device-readable part (the device side's view); nil when it is shorter than the header.
    public init?(readable bytes: [UInt8], resultCapacity: Int) {
        guard bytes.count >= Self.headerSize else { return nil }
        let r = LEReader(bytes)
        self.init(opcode: r.u16(0), group: r.u16(2), memberID: r.u64(16), data: Array(bytes[Self.headerSize...]),
                  resultCapacity: resultCapacity)
    }
}

/// What came back: status, qualifier and the result bytes the device wrote.
public struct AdminResponse: Sendable, Equatable {
    public let status: AdminStatus
    public let qualifier: AdminQualifier
    /// `command_specific_result`, truncated to what the device wrote (used length − 8).
    public let result: [UInt8]

    public init(status: AdminStatus, qualifier: AdminQualifier, result: [UInt8]) {
        self.status = status
        self.qualifier = qualifier
        self.result = result
    }

    /// The device-writable part: `le16 status; le16 status_qualifier; u8 reserved2[4]; result`.
    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u16(status.raw)
        w.u16(qualifier.raw)
        w.zeros(4)
        w.bytes(result)
        return w.out
    }
}

/// The LIST_QUERY / LIST_USE payload: bit n of le64 word n/64 means opcode n.
public struct AdminOpcodeSet: Sendable, Equatable, Codable {
    public var words: [UInt64]
    public init(words: [UInt64]) { self.words = words }
    public init(_ opcodes: [UInt16]) {
        words = []
        for o in opcodes { insert(o) }
    }
    public mutating func insert(_ o: UInt16) {
        let w = Int(o) / 64
        while words.count <= w { words.append(0) }
        words[w] |= 1 << UInt64(o % 64)
    }
    public func contains(_ o: UInt16) -> Bool {
        let w = Int(o) / 64
        return w < words.count && words[w] & (1 << UInt64(o % 64)) != 0
    }
    public var opcodes: [UInt16] {
        var out: [UInt16] = []
        // Opcodes are 16 bits: words past 1024 name none (a device's oversized bitmap is cut, not trapped on).
        for (i, w) in words.prefix(1024).enumerated() where w != 0 {
            for b in 0..<64 where w & (1 << UInt64(b)) != 0 { out.append(UInt16(i * 64 + b)) }
        }
        return out
    }
    public func intersection(_ other: AdminOpcodeSet) -> AdminOpcodeSet {
        AdminOpcodeSet(words: (0..<min(words.count, other.words.count)).map { words[$0] & other.words[$0] })
    }
    public func isSubset(of other: AdminOpcodeSet) -> Bool { intersection(other).opcodes == opcodes }
    /// Wire form: the words, le64 each.
    public var encoded: [UInt8] {
        var w = LEWriter()
        for x in words { w.u64(x) }
        return w.out
    }
    public init(decoding bytes: [UInt8]) {
        let r = LEReader(bytes)
        words = (0..<(bytes.count / 8)).map { r.u64($0 * 8) }
    }
}
