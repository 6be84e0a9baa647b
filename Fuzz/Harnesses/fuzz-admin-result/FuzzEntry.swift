// fuzz-admin-result: every decoder in VirtioCore/Admin that reads bytes a device wrote (status and
// qualifier, LIST_QUERY bitmaps, LEGACY_NOTIFY_INFO, DEVICE_CAP_GET, DEV_PARTS_GET parts and the
// member state built from them) plus the soft device's decoder of the driver's command. They must
// throw or return, never trap. Where a decoder has an encoder, decode(encode(x)) == x is checked too:
// a driver that saves parts and restores them relies on it.
//
// Input: byte 0 picks the decoder, the rest is what the device wrote.
#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import VirtioRing  // LEReader: what every admin decoder reads with
import FuzzReplay
import VirtioWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 8 {
    case 0: statusPart(bytes)
    case 1: opcodeBitmap(bytes)
    case 2: for e in LegacyNotifyEntry.decode(bytes) { _ = e.owner; _ = e.encoded }
    case 3: let cap = DevPartsCapability(decoding: bytes)
        precondition(DevPartsCapability(decoding: cap.encoded) == cap, "DEV_PARTS capability does not round-trip")
    case 4: deviceParts(bytes)
    case 5: queueParts(bytes)
    case 6: commandFromDriver(bytes, capacity: Int(data[0] >> 3))
    default: legacyRead(bytes, length: Int(data[0] >> 3))
    }
    return 0
}

/// The 8-byte status the device writes first, decoded as AdminChannel.transact does, and what a
/// failure tells the user (the hints switch over every status/qualifier pair).
func statusPart(_ written: [UInt8]) {
    guard written.count >= 8 else { return }  // transact throws .shortStatus before decoding
    let raw = (UInt16(written[0]) | UInt16(written[1]) << 8, UInt16(written[2]) | UInt16(written[3]) << 8)
    let response = AdminResponse(status: AdminStatus(raw.0), qualifier: AdminQualifier(raw.1),
                                 result: Array(written[8...]))
    precondition(response.status.raw == raw.0 && response.qualifier.raw == raw.1, "status/qualifier do not round-trip")
    _ = response.status.effective
    _ = response.qualifier.effective
    _ = response.encoded
    let failure = AdminError.commandFailed(opcode: UInt16(written.count), group: raw.1 & 1, member: 1,
                                           status: response.status, qualifier: response.qualifier)
    _ = failure.description
}

/// LIST_QUERY's result; LIST_USE sends a subset back, so the set must survive encoding.
/// The driver gives the device 8 bytes for it; 256 (2048 opcodes) is plenty and keeps executions fast.
func opcodeBitmap(_ all: [UInt8]) {
    let bytes = Array(all.prefix(256))
    let set = AdminOpcodeSet(decoding: bytes)
    let opcodes = set.opcodes
    precondition(opcodes.allSatisfy(set.contains), "opcodes lists an opcode contains denies")
    precondition(AdminOpcodeSet(decoding: set.encoded) == set, "opcode bitmap does not round-trip")
    precondition(set.isSubset(of: set) && set.intersection(set).opcodes == opcodes, "set algebra broke")
    _ = bitmapMembers(bytes)
    // The error that names the agreed set (a few opcodes: rendering thousands per input only slows the fuzzer).
    if let o = opcodes.last { _ = AdminError.opcodeNotInUse(opcode: o, group: 1, inUse: Array(opcodes.prefix(16))).description }
}

/// DEV_PARTS_GET's result: parts back to back, then the member state a restore would write.
func deviceParts(_ bytes: [UInt8]) {
    guard let parts = try? DevicePart.decode(bytes) else { return }
    _ = DevicePart.orderViolation(parts)
    for p in parts { _ = DevicePartType.name(p.type); _ = p.queueIndex }
    precondition((try? DevicePart.decode(DevicePart.encode(parts))) == parts, "device parts do not round-trip")
    guard let state = try? MemberState(parts: parts) else { return }
    // restoreParts sends state.parts: they must decode to the same state.
    precondition((try? MemberState(parts: state.parts)) == state, "member state does not round-trip through its parts")
}

/// The fixed-size part values, decoded from whatever length the device gave.
func queueParts(_ bytes: [UInt8]) {
    let c = VQConfigPart(decoding: bytes), n = VQNotifyPart(decoding: bytes), s = VQStatePart(decoding: bytes)
    precondition(VQConfigPart(decoding: c.encoded) == c, "VQ_CFG does not round-trip")
    precondition(VQNotifyPart(decoding: n.encoded) == n, "VQ_NOTIFY_CFG does not round-trip")
    precondition(VQStatePart(decoding: s.encoded) == s, "VQ_STATE does not round-trip")
}

/// The other direction: the soft device decodes the driver's device-readable part.
func commandFromDriver(_ bytes: [UInt8], capacity: Int) {
    guard let c = AdminCommand(readable: bytes, resultCapacity: capacity * 8) else { return }
    _ = c.readable
    _ = c.writableLength
    _ = AdminOpcode(rawValue: c.opcode)?.description
}

/// LEGACY_*_CFG_READ: the result cut or padded to the read's width (AdminChannel.legacyRead).
func legacyRead(_ bytes: [UInt8], length: Int) {
    let out = LEReader(bytes).slice(0, length)
    precondition(out.count == length && zip(out, bytes).allSatisfy(==), "legacy read result is not the device's bytes")
}

#if !FUZZING
/// Without libFuzzer: replays crash files (or directories of them).
@main
enum Replay {
    static func main() { FuzzReplay.run(fuzzOne) }
}
#endif
