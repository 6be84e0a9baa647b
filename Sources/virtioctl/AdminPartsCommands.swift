import ArgumentParser
import VirtioAttach
import Foundation
import VirtioCore
import VirtioWire

/// The admin verbs of live migration: stop/resume a member, device parts, resource objects.
extension AdminVerbs {
    struct ModeSet: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "mode-set", abstract: "DEV_MODE_SET: stop or resume a member.")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @Flag(name: .customLong("stop"), help: "Stop the member (it serves nothing until resumed).") var stop = false
        @Flag(name: .customLong("resume"), help: "Resume the member.") var resume = false

        func prepare() throws {
            _ = try target.resolved()
            guard stop != resume else { throw CLIError("mode-set: give exactly one of --stop and --resume") }
        }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (_, member) = try target.resolved()
            try c.setMode(member: member, stopped: stop)
            if common.output == .json { try printJSON(["member": "\(member)", "mode": stop ? "stopped" : "running"]) }
            else if common.output == .normal { print("member \(member): \(stop ? "stopped" : "running")") }
        }
    }

    struct DevPartsGet: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "dev-parts-get",
            abstract: "Save a member's device parts (GET object, METADATA_GET SIZE, DEV_PARTS_GET ALL, destroy).")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @Flag(help: "Stop the member first (DEV_MODE_SET), as a migration does.") var stop = false

        func prepare() throws { _ = try target.resolved() }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (_, member) = try target.resolved()
            try c.enableDevPartsCapability()
            if stop { try c.setMode(member: member, stopped: true) }
            let parts = try c.saveParts(member: member)
            printParts(parts, common.output)
        }
    }

    struct DevPartsSet: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "dev-parts-set",
            abstract: "Write device parts (as dev-parts-get -o binary saved them) into a member: stop, SET object, DEV_PARTS_SET, destroy.")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @Option(help: "File with the parts, back to back (dev-parts-get -o binary).") var inputFile: String
        @Flag(help: "Resume the member afterwards.") var resume = false

        func parts() throws -> [DevicePart] {
            guard let d = FileManager.default.contents(atPath: inputFile) else { throw CLIError("--input-file \(inputFile): cannot read it") }
            let parts = try DevicePart.decode([UInt8](d))
            _ = try MemberState(parts: parts)
            return parts
        }
        func prepare() throws {
            _ = try target.resolved()
            _ = try parts()
        }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (_, member) = try target.resolved()
            try c.enableDevPartsCapability()
            try c.setMode(member: member, stopped: true)
            try c.restoreParts(member: member, parts: try parts())
            if resume { try c.setMode(member: member, stopped: false) }
            if common.output == .normal { print("member \(member): parts set\(resume ? ", resumed" : " (stopped)")") }
            else if common.output == .json { try printJSON(["member": "\(member)", "result": "ok"]) }
        }
    }

    /// A DEV_PARTS object: which id and kind (the create and query verbs share it).
    struct ObjectOptions: ParsableArguments {
        @Option(help: "Object id.") var id: UInt32 = 0
        @Option(help: "Object kind: get or set.") var kind: String = "get"

        func check() throws { guard kind == "get" || kind == "set" else { throw CLIError("--kind must be get or set") } }

        /// DRIVER_CAP_SET, then RESOURCE_OBJ_CREATE of the object for `member`.
        func create<T>(_ c: AdminChannel<T>, group: AdminGroup, member: UInt64) throws {
            try c.enableDevPartsCapability()
            _ = try c.execute(AdminRequest.resourceCreate(group: group, member: member, type: ResourceObjectType.devParts, id: id,
                                                          specific: AdminRequest.devPartsObject(set: kind == "set")))
        }
    }

    struct ResourceCreate: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "resource-create",
            abstract: "RESOURCE_OBJ_CREATE of a DEV_PARTS object (after DRIVER_CAP_SET).")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @OptionGroup var object: ObjectOptions

        func prepare() throws {
            _ = try target.resolved()
            try object.check()
        }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (g, member) = try target.resolved()
            try object.create(c, group: g, member: member)
            if common.output == .normal { print("object \(object.id) (\(object.kind)) created for member \(member)") }
            else if common.output == .json { try printJSON(["id": "\(object.id)", "kind": object.kind, "result": "ok"]) }
        }
    }

    struct ResourceQuery: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "resource-query",
            abstract: "Create a DEV_PARTS object, RESOURCE_OBJ_QUERY it, destroy it (objects last one run).")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @OptionGroup var object: ObjectOptions

        func prepare() throws {
            _ = try target.resolved()
            try object.check()
        }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (g, member) = try target.resolved()
            try object.create(c, group: g, member: member)
            let id = object.id
            let r = try c.execute(AdminRequest.resourceQuery(group: g, member: member, type: ResourceObjectType.devParts, id: id))
            _ = try c.execute(AdminRequest.resourceDestroy(group: g, member: member, type: ResourceObjectType.devParts, id: id))
            switch common.output {
            case .binary: writeBinary(r)
            case .json: try printJSON(["id": "\(id)", "kind": r.first == 1 ? "set" : "get", "data": hexString(r)])
            case .normal: print("object \(id): DEV_PARTS \(r.first == 1 ? "set" : "get") (\(hexString(r)))")
            }
        }
    }

    struct ResourceDestroy: AdminVerb {
        static let configuration = CommandConfiguration(commandName: "resource-destroy",
            abstract: "RESOURCE_OBJ_DESTROY of a DEV_PARTS object (ENXIO when none exists: objects last one run).")
        @OptionGroup var common: AdminOptions
        @OptionGroup var target: MemberOption
        @Option(help: "Object id.") var id: UInt32 = 0

        func prepare() throws { _ = try target.resolved() }
        func perform<T>(_ c: AdminChannel<T>) throws {
            let (g, member) = try target.resolved()
            _ = try c.execute(AdminRequest.resourceDestroy(group: g, member: member, type: ResourceObjectType.devParts, id: id))
            if common.output == .normal { print("object \(id) destroyed") }
        }
    }
}

func printParts(_ parts: [DevicePart], _ output: AdminOutput) {
    switch output {
    case .binary: writeBinary(DevicePart.encode(parts))
    case .json:
        try? printJSON(parts.map { PartReport(type: $0.type, name: DevicePartType.name($0.type), flags: $0.flags, selector: $0.selector,
                                      value: hexString($0.value)) })
    case .normal:
        let state = try? MemberState(parts: parts)
        for p in parts {
            print("\(DevicePartType.name(p.type).padding(toLength: 20, withPad: " ", startingAt: 0)) sel \(p.selector)  \(hexString(p.value))")
        }
        if let state {
            print("status 0x\(String(state.status, radix: 16)), driver features 0x\(String(state.driverFeatures, radix: 16))")
            for q in state.queues {
                let pos = q.state.map { " avail state 0x\(String($0.availState, radix: 16)) used state 0x\(String($0.usedState, radix: 16))" } ?? ""
                print("queue \(q.index): size \(q.config.size) \(q.config.enabled ? "enabled" : "disabled") desc 0x\(String(q.config.descriptors, radix: 16))\(pos)")
            }
        }
    }
}
