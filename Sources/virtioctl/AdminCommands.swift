import ArgumentParser
import VirtioAttach
import Foundation
import VirtioCore
import VirtioWire

extension VirtioCtl {
    /// `virtioctl admin DEVICE VERB [options]`: admin virtqueue commands, in the manner of nvme-cli.
    struct Admin: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send admin virtqueue commands (VIRTIO_F_ADMIN_VQ) to an owner device.",
            usage: "virtioctl admin DEVICE VERB [options]   (virtioctl admin DEVICE VERB --help for a verb's options)",
            discussion: """
            Verbs: \(AdminVerbs.configuration.subcommands.map { $0.configuration.commandName ?? "" }.joined(separator: ", ")).
            Each run resets the device, does the LIST_QUERY/LIST_USE handshake, and resets it again when done:
            objects and modes do not outlive one command on a soft: device (its memory lasts one command).
            Example: virtioctl admin soft:blk,vfs=2 list-query -o json
            """)

        @Argument(help: ArgumentHelp("The owner device: \(DeviceSpec.syntax).", valueName: "device"))
        var device: String

        @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The verb and its options.", valueName: "verb"))
        var verb: [String] = []

        func run() throws {
            guard let name = verb.first else {
                throw CLIError("admin: name a verb after the device: "
                    + AdminVerbs.configuration.subcommands.map { $0.configuration.commandName ?? "" }.joined(separator: ", "))
            }
            let verbs = AdminVerbs.configuration.subcommands.compactMap { $0.configuration.commandName }
            guard verbs.contains(name) || ["-h", "--help", "help"].contains(name) else {
                throw CLIError("admin: unknown verb '\(name)'; verbs: " + verbs.joined(separator: ", "))
            }
            if verb.contains(where: { ["-h", "--help"].contains($0) }) || name == "help" {
                let type = AdminVerbs.configuration.subcommands.first { $0.configuration.commandName == name }
                print(type.map { AdminVerbs.helpMessage(for: $0) } ?? AdminVerbs.helpMessage())
                return
            }
            let command: ParsableCommand
            do { command = try AdminVerbs.parseAsRoot(verb) } catch { AdminVerbs.exit(withError: error) }
            guard let v = command as? any AdminVerb else {
                throw CLIError("admin: unknown verb '\(name)'")
            }
            try withAdminChannel(device: device, verb: v)
        }
    }
}

/// The admin verbs (parsed from what follows DEVICE).
struct AdminVerbs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtioctl admin DEVICE",
        subcommands: [ListQuery.self, ListUse.self, Caps.self, NotifyInfo.self, LegacyRead.self, LegacyWrite.self,
                      ModeSet.self, DevPartsGet.self, DevPartsSet.self, ResourceCreate.self, ResourceQuery.self,
                      ResourceDestroy.self, Passthru.self])
}

struct OpcodeReport: Codable { let group: String; let opcodes: [OpcodeEntry] }
struct CapReport: Codable { let id: UInt16; let name: String; let data: String; var getLimit: UInt8?; var setLimit: UInt8? }
struct LegacyReadReport: Codable { let member: UInt64; let offset: UInt8; let bytes: String; let value: UInt64 }
struct PassthruReport: Codable { let status: UInt16; let statusName: String; let qualifier: UInt16; let qualifierName: String; let result: String }
struct PartReport: Codable { let type: UInt16; let name: String; let flags: UInt8; let selector: UInt64; let value: String }

struct OpcodeEntry: Codable {
    let opcode: UInt16
    let name: String
    init(_ o: UInt16) {
        opcode = o
        name = AdminOpcode(rawValue: o).map { "\($0)" } ?? "0x\(String(o, radix: 16))"
    }
}

extension AdminVerbs {
    struct ListQuery: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "list-query", abstract: "LIST_QUERY: the opcodes the device supports for a group.")
        @OptionGroup var common: AdminOptions
        @Option(help: "Group type: self or sriov.") var group: GroupChoice = .sriov

        func perform<T>(_ c: AdminChannel<T>) throws {
            let set = try c.listQuery(group: group.group)
            switch common.output {
            case .binary: writeBinary(set.encoded)
            case .json:
                try printJSON(OpcodeReport(group: group.rawValue, opcodes: set.opcodes.map(OpcodeEntry.init)))
            case .normal:
                print("group \(group.rawValue): \(set.opcodes.count) opcode(s)")
                for o in set.opcodes.map(OpcodeEntry.init) { print("  \(hexPadded(o.opcode, 2))  \(o.name)") }
            }
        }
    }

    struct ListUse: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "list-use",
            abstract: "LIST_QUERY then LIST_USE: agree on the opcodes to use (default: all the device and this driver know).")
        @OptionGroup var common: AdminOptions
        @Option(help: "Group type: self or sriov.") var group: GroupChoice = .sriov
        @Option(help: "Opcodes to use, comma-separated names or numbers (LIST_QUERY and LIST_USE are always added).")
        var opcodes: String?

        func wanted() throws -> AdminOpcodeSet? {
            guard let opcodes else { return nil }
            var set = AdminOpcodeSet([0, 1])
            for name in opcodes.split(separator: ",") {
                guard let o = AdminOpcode.parse(String(name)) else { throw CLIError("--opcodes: unknown opcode '\(name)'; names: " + AdminOpcode.allCases.map { "\($0)".lowercased().replacingOccurrences(of: "_", with: "-") }.joined(separator: ", ")) }
                set.insert(o)
            }
            return set
        }
        func prepare() throws { _ = try wanted() }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let used = try c.activate(group: group.group, use: try wanted())
            switch common.output {
            case .binary: writeBinary(used.encoded)
            case .json:
                try printJSON(OpcodeReport(group: group.rawValue, opcodes: used.opcodes.map(OpcodeEntry.init)))
            case .normal: print("group \(group.rawValue) uses: " + used.opcodes.map { OpcodeEntry($0).name }.joined(separator: ", "))
            }
        }
    }

    struct Caps: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "caps",
            abstract: "CAP_ID_LIST_QUERY, then DEVICE_CAP_GET for each capability (self group).")
        @OptionGroup var common: AdminOptions

        func perform<T>(_ c: AdminChannel<T>) throws {
            var caps: [CapReport] = []
            for id in try c.capabilityIDs() {
                let data = try c.deviceCap(id: id)
                var cap = CapReport(id: id, name: id == AdminCapability.devParts ? "DEV_PARTS" : "cap 0x\(String(id, radix: 16))",
                              data: hexString(data))
                if id == AdminCapability.devParts {
                    let d = DevPartsCapability(decoding: data)
                    cap.getLimit = d.getLimit
                    cap.setLimit = d.setLimit
                }
                caps.append(cap)
            }
            switch common.output {
            case .binary: writeBinary(caps.flatMap { parseHex($0.data) ?? [] })
            case .json: try printJSON(caps)
            case .normal:
                for cap in caps {
                    print("\(hexPadded(cap.id, 4))  \(cap.name)"
                          + (cap.getLimit.map { "  get objects \($0), set objects \(cap.setLimit ?? 0)" } ?? "  data \(cap.data)"))
                }
            }
        }
    }

    struct NotifyInfo: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "notify-info", abstract: "LEGACY_NOTIFY_INFO of a member.")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption

        func prepare() throws { _ = try target.resolved() }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (_, member) = try target.resolved()
            let entries = try c.legacyNotifyInfo(member: member)
            switch common.output {
            case .binary: writeBinary(entries.flatMap(\.encoded))
            case .json: try printJSON(entries)
            case .normal: for e in entries { print("\(e.owner) BAR \(e.bar) offset 0x\(String(e.offset, radix: 16))") }
            }
        }
    }

    struct LegacyRead: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "legacy-read",
            abstract: "LEGACY_COMMON_CFG_READ (or LEGACY_DEV_CFG_READ with --device-cfg): one field of a member's legacy registers.")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @Option(help: "Byte offset of the field (0-255).") var offset: UInt8
        @Option(help: "Field width in bytes.") var length: Int = 1
        @Flag(help: "Read the legacy device-specific config instead of the common header.") var deviceCfg = false

        func prepare() throws {
            _ = try target.resolved()
            guard (1...256).contains(length) else { throw CLIError("--length must be 1...256") }
        }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (_, member) = try target.resolved()
            let bytes = try c.legacyRead(device: deviceCfg, member: member, offset: offset, length: length)
            var value: UInt64 = 0
            for (i, b) in bytes.prefix(8).enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
            switch common.output {
            case .binary: writeBinary(bytes)
            case .json:
                try printJSON(LegacyReadReport(member: member, offset: offset, bytes: hexString(bytes), value: value))
            case .normal: print("member \(member) \(deviceCfg ? "device" : "common") config @\(offset): \(hexString(bytes)) (= \(value), 0x\(String(value, radix: 16)))")
            }
        }
    }

    struct LegacyWrite: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "legacy-write",
            abstract: "LEGACY_COMMON_CFG_WRITE (or LEGACY_DEV_CFG_WRITE with --device-cfg): one field, little-endian hex bytes.")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @Option(help: "Byte offset of the field (0-255).") var offset: UInt8
        @Option(help: "The bytes to write, hex (e.g. 0f, or 0100 for a 16-bit 1).") var data: String
        @Flag(help: "Write the legacy device-specific config instead of the common header.") var deviceCfg = false

        func bytes() throws -> [UInt8] {
            guard let b = parseHex(data), !b.isEmpty else { throw CLIError("--data '\(data)': expected hex bytes such as 0f or 0100") }
            return b
        }
        func prepare() throws {
            _ = try target.resolved()
            _ = try bytes()
        }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (_, member) = try target.resolved()
            try c.legacyWrite(device: deviceCfg, member: member, offset: offset, data: try bytes())
            if common.output == .json { try printJSON(["result": "ok"]) } else if common.output == .normal { print("ok") }
        }
    }

    struct Passthru: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "passthru",
            abstract: "Any admin command: opcode, group, member and data as given; prints status, qualifier and result.")
        @OptionGroup var common: AdminOptions
        @Option(help: "Opcode: a number (0x11) or a name (dev-mode-set).") var opcode: String
        @Option(help: "Group type: self or sriov.") var group: GroupChoice = .selfGroupDefault
        @Option(help: "Member id (VF number for sriov).") var member: UInt64 = 0
        @Option(help: "Command data, hex.") var data: String?
        @Option(help: "Command data from a file.") var inputFile: String?
        @Option(help: "Bytes of result to make room for.") var resultLen: Int = 0
        @Flag(help: "Print the command's bytes and send nothing (no device is opened).") var dryRun = false
        @Flag(help: "Print the command's bytes to stderr before sending.") var showCmd = false

        func command() throws -> AdminCommand {
            guard let op = AdminOpcode.parse(opcode) else {
                throw CLIError("--opcode '\(opcode)': not a number or a known name (\(AdminOpcode.allCases.map { "\($0)" }.joined(separator: ", ")))")
            }
            guard data == nil || inputFile == nil else { throw CLIError("give --data or --input-file, not both") }
            var bytes: [UInt8] = []
            if let data {
                guard let b = parseHex(data) else { throw CLIError("--data '\(data)': not hex bytes") }
                bytes = b
            } else if let inputFile {
                guard let d = FileManager.default.contents(atPath: inputFile) else { throw CLIError("--input-file \(inputFile): cannot read it") }
                bytes = [UInt8](d)
            }
            guard (0...(64 * 1024 - 8)).contains(resultLen) else { throw CLIError("--result-len must be 0...65528") }
            return AdminCommand(opcode: op, group: group.group.rawValue, memberID: member, data: bytes, resultCapacity: resultLen)
        }
        func show(_ c: AdminCommand) -> String {
            "opcode 0x\(String(c.opcode, radix: 16)) group \(c.group) member \(c.memberID): readable \(c.readable.count) bytes \(hexString(c.readable)), writable \(c.writableLength) bytes"
        }
        func prepare() throws {
            let c = try command()
            if dryRun {
                print(show(c))
                throw ExitCode.success
            }
            if showCmd { note(show(c)) }
        }
        func perform<T>(_ ch: AdminChannel<T>) throws {
            let c = try command()
            let r = try ch.send(c)
            switch common.output {
            case .binary: writeBinary(r.result)
            case .json:
                try printJSON(PassthruReport(status: r.status.raw, statusName: "\(r.status)", qualifier: r.qualifier.raw,
                                qualifierName: "\(r.qualifier)", result: hexString(r.result)))
            case .normal:
                print("status \(r.status), qualifier \(r.qualifier), \(r.result.count) result byte(s)")
                hexDump(r.result)
            }
            guard r.status.effective == .ok else { throw ExitCode(Int32(min(Int(r.status.raw), 125))) }
        }
    }
}

extension GroupChoice {
    static var selfGroupDefault: GroupChoice { .self }
}
