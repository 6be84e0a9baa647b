import Testing
import VirtioCore
import VirtioWire

/// Every admin command's bytes against layouts computed by hand from the spec's structs.
@Suite(.leakChecked) struct AdminCodecTests {
    func hex(_ b: [UInt8]) -> String { b.map { String(format2($0)) }.joined() }
    func format2(_ x: UInt8) -> String { (x < 16 ? "0" : "") + String(x, radix: 16) }
    /// The 24-byte header: le16 opcode, le16 group, 12 zero bytes, le64 member.
    func header(_ op: UInt16, _ group: UInt16, _ member: UInt64) -> String {
        func le(_ v: UInt64, _ n: Int) -> String { (0..<n).map { format2(UInt8(truncatingIfNeeded: v >> (8 * UInt64($0)))) }.joined() }
        return le(UInt64(op), 2) + le(UInt64(group), 2) + String(repeating: "00", count: 12) + le(member, 8)
    }

    @Test func listQueryAndListUse() {
        let q = AdminCommand(opcode: 0, group: 1, resultCapacity: 8)
        #expect(hex(q.readable) == header(0, 1, 0))
        #expect(q.writableLength == 16)
        let use = AdminCommand(opcode: 1, group: 1, data: AdminOpcodeSet([0, 1, 3, 0x11]).encoded)
        // bits 0,1,3,17 of word 0: 0x2000B
        #expect(hex(use.readable) == header(1, 1, 0) + "0b00020000000000")
        #expect(AdminOpcodeSet(decoding: [0x0b, 0, 2, 0, 0, 0, 0, 0]).opcodes == [0, 1, 3, 0x11])
        // Opcode 64 needs a second word.
        #expect(AdminOpcodeSet([64]).encoded == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func legacyAccess() {
        let w = AdminRequest.legacyWrite(device: false, member: 2, offset: 18, data: [0x0F])
        #expect(hex(w.readable) == header(2, 1, 2) + "12" + "00000000000000" + "0f")
        #expect(w.writableLength == 8)
        let dw = AdminRequest.legacyWrite(device: true, member: 1, offset: 4, data: [1, 2])
        #expect(hex(dw.readable) == header(4, 1, 1) + "04" + "00000000000000" + "0102")
        let r = AdminRequest.legacyRead(device: true, member: 1, offset: 0x14, length: 4)
        #expect(hex(r.readable) == header(5, 1, 1) + "14")
        #expect(r.writableLength == 12)
        let cr = AdminRequest.legacyRead(device: false, member: 3, offset: 0, length: 4)
        #expect(cr.opcode == 3 && cr.memberID == 3)
        let n = AdminRequest.legacyNotifyInfo(member: 1)
        #expect(hex(n.readable) == header(6, 1, 1) && n.writableLength == 72)
        // Result: {flags 2, bar 4, pad, le64 0x3000}, then the end entry.
        var result = LegacyNotifyEntry(flags: 2, bar: 4, offset: 0x3000).encoded + [UInt8](repeating: 0, count: 48)
        #expect(hex(Array(result[0..<16])) == "0204000000000000" + "0030000000000000")
        #expect(LegacyNotifyEntry.decode(result) == [LegacyNotifyEntry(flags: 2, bar: 4, offset: 0x3000)])
        result.removeLast(60)
        #expect(LegacyNotifyEntry.decode(result) == [LegacyNotifyEntry(flags: 2, bar: 4, offset: 0)], "short: zero-filled")
    }

    @Test func capabilities() {
        #expect(hex(AdminRequest.capIDListQuery().readable) == header(7, 0, 0))
        #expect(hex(AdminRequest.deviceCapGet(id: 0x0801).readable) == header(8, 0, 0) + "0108000000000000")
        let set = AdminRequest.driverCapSet(id: 0, data: DevPartsCapability(getLimit: 3, setLimit: 2).encoded)
        // 24 + 8 + 2 = 34, padded to 40.
        #expect(hex(set.readable) == header(9, 0, 0) + "0000000000000000" + "0302" + "000000000000")
        #expect(DevPartsCapability(decoding: [5]) == DevPartsCapability(getLimit: 5, setLimit: 0))
    }

    @Test func resourceObjects() {
        let c = AdminRequest.resourceCreate(group: .sriov, member: 1, type: 0, id: 7, specific: AdminRequest.devPartsObject(set: true))
        // hdr {le16 type 0, 2 reserved, le32 id 7}, le64 flags 0, {u8 type 1, 7 reserved}
        #expect(hex(c.readable) == header(0xa, 1, 1) + "0000" + "0000" + "07000000" + "0000000000000000" + "01" + "00000000000000")
        #expect(AdminRequest.resourceQuery(group: .sriov, member: 1, type: 0, id: 7).opcode == 0xb)
        #expect(hex(AdminRequest.resourceQuery(group: .sriov, member: 1, type: 0, id: 7).readable)
                == header(0xb, 1, 1) + "0000000007000000" + "0000000000000000")
        #expect(AdminRequest.resourceModify(group: .sriov, member: 1, type: 0, id: 7, specific: [0]).opcode == 0xc)
        #expect(hex(AdminRequest.resourceDestroy(group: .sriov, member: 2, type: 0, id: 0x01020304).readable)
                == header(0xd, 1, 2) + "0000000004030201")
    }

    @Test func deviceParts() throws {
        let m = AdminRequest.devPartsMetadataGet(member: 1, object: 2, kind: .list, resultCapacity: 64)
        #expect(hex(m.readable) == header(0xe, 1, 1) + "0000000002000000" + "02" + "00000000000000")
        let g = AdminRequest.devPartsGet(member: 1, object: 2, resultCapacity: 100)
        #expect(hex(g.readable) == header(0xf, 1, 1) + "0000000002000000" + "01" + "00000000000000")
        #expect(g.writableLength == 8 + 104)
        let sel = AdminRequest.devPartsGet(member: 1, object: 2, selected: [DevicePart(type: 0x104, selector: 3, value: [])],
                                           resultCapacity: 64)
        // SELECTED, then one 16-byte header: type 0x104, flags 0, selector le64 3, length 0.
        #expect(hex(sel.readable) == header(0xf, 1, 1) + "0000000002000000" + "00" + "00000000000000"
                + "0401" + "00" + "00" + "0300000000000000" + "00000000")
        let part = DevicePart(type: DevicePartType.vqCfg, selector: 1,
                              value: VQConfigPart(size: 256, vector: 0xFFFF, enabled: true, descriptors: 0x1000,
                                                  driver: 0x2000, device: 0x3000).encoded)
        #expect(hex(part.encoded) == "0401" + "00" + "00" + "0100000000000000" + "20000000"
                + "0001" + "ffff" + "0100" + "0000" + "0010000000000000" + "0020000000000000" + "0030000000000000")
        let s = AdminRequest.devPartsSet(member: 2, object: 1, parts: part.encoded)
        #expect(hex(s.readable) == header(0x10, 1, 2) + "0000000001000000" + hex(part.encoded))
        #expect(hex(AdminRequest.devModeSet(member: 1, stopped: true).readable) == header(0x11, 1, 1) + "0100000000000000")
        #expect(hex(AdminRequest.devModeSet(member: 1, stopped: false).readable) == header(0x11, 1, 1) + "0000000000000000")
    }

    @Test func memberStateRoundTripAndOrder() throws {
        let st = MemberState(deviceFeatures: 0x1_0000_0001, driverFeatures: 0x1_0000_0000, configMSIXVector: 0xFFFF, status: 0x0F,
                             queues: [.init(index: 0, config: VQConfigPart(size: 8, vector: 1, enabled: true, descriptors: 1,
                                                                            driver: 2, device: 3),
                                            notify: VQNotifyPart(notifyOff: 0, notifConfigData: 0x4000),
                                            state: VQStatePart(availState: 0x8003, usedState: 0x0005))])
        let bytes = DevicePart.encode(st.parts)
        #expect(try MemberState(parts: try DevicePart.decode(bytes)) == st)
        #expect(st.parts.map(\.type) == [0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0xFFFE])
        // Files saved before VQ_STATE moved carry it as 0x1FF: still read as the ring state.
        let before = st.parts.map { p in p.type == DevicePartType.vqState ? DevicePart(type: 0x1FF, flags: p.flags, selector: p.selector, value: p.value) : p }
        #expect(try MemberState(parts: before) == st)
        // VQ_STATE value: le16 avail state, le16 used state, 4 reserved.
        #expect(hex(st.parts.last!.value) == "0380" + "0500" + "00000000")
        // Out of order, truncated and short parts are refused.
        var swapped = st.parts
        swapped.swapAt(0, 1)
        #expect(throws: WireError.self) { _ = try MemberState(parts: swapped) }
        #expect(throws: WireError.self) { _ = try DevicePart.decode(Array(bytes.dropLast(1))) }
        var short = st.parts
        short[3].value = []
        #expect(throws: WireError.self) { _ = try MemberState(parts: short) }
        // An unknown OPTIONAL part is skipped; an unknown mandatory one is refused (0x106: reserved common).
        #expect(try MemberState(parts: st.parts + [DevicePart(type: 0x106, flags: 1, value: [1])]) == st)
        #expect(throws: WireError.self) { _ = try MemberState(parts: st.parts + [DevicePart(type: 0x106, value: [1])]) }
        #expect(throws: WireError.self) { _ = try MemberState(parts: st.parts + [DevicePart(type: 0x600, value: [1])]) }
    }

    /// Device-type parts (0x200-0x5FF, e.g. virtio-net's CVQ part 0x200) are the device type's business:
    /// accepted anywhere (the order rules rank only the common parts), mandatory or not, and kept as they came.
    @Test func deviceTypePartsPassThroughInPlace() throws {
        let st = MemberState(deviceFeatures: 1, driverFeatures: 1, configMSIXVector: 0, status: 0x0F,
                             queues: [.init(index: 0, config: VQConfigPart(size: 8, vector: 1, enabled: true, descriptors: 0x1000,
                                                                           driver: 0x2000, device: 0x3000),
                                            notify: VQNotifyPart(notifyOff: 0, notifConfigData: 0), state: nil)])
        let common = st.parts.filter { $0.type != DevicePartType.vqState }
        // virtio-net CVQ part: selector {u8 class; u8 command}, e.g. MAC (1) ADDR_SET (1), value = a MAC.
        let net = DevicePart(type: 0x200, selector: 0x0101, value: [0x02, 0, 0, 0, 0, 1])
        for at in [common.count, common.firstIndex { $0.type == 0x105 }!, 0, 3] {
            var parts = common
            parts.insert(net, at: at)
            #expect(DevicePart.orderViolation(parts) == nil, "0x200 at \(at)")
            let s = try MemberState(parts: parts)
            #expect(s.deviceTypeParts == [net], "0x200 at \(at)")
            #expect(try DevicePart.decode(DevicePart.encode(parts)) == parts, "bytes unchanged, 0x200 at \(at)")
        }
        // The common parts keep their order rules around a device-type part.
        var bad = common
        bad.insert(net, at: 1)
        bad.swapAt(0, 2)
        #expect(DevicePart.orderViolation(bad) != nil)
        #expect(DevicePartType.name(0x200) == "device-type part 0x200")
    }

    @Test func opcodeNamesParse() {
        #expect(AdminOpcode.parse("list-query") == 0)
        #expect(AdminOpcode.parse("DEV_MODE_SET") == 0x11)
        #expect(AdminOpcode.parse("VIRTIO_ADMIN_CMD_DEV_PARTS_GET") == 0xf)
        #expect(AdminOpcode.parse("0x10") == 0x10 && AdminOpcode.parse("17") == 17)
        #expect(AdminOpcode.parse("frobnicate") == nil && AdminOpcode.parse("0x10000") == nil)
    }
}
