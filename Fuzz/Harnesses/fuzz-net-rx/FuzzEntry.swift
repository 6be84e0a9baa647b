// fuzz-net-rx: the net driver's receive path (NetRxQueue over a split or packed ring, mergeable
// buffers or one per frame) against a soft:net whose every received frame the input may rewrite
// on its way out: the 12 header bytes (flags, gso_type, num_buffers, ...) and the used length of
// each buffer the frame took. The model (NetRxModel.swift) traps when the driver hands out a
// frame twice, a stale buffer, a segment past its buffer or two segments in one buffer, frames
// after it broke the queue, or calls an honest device a liar.
//
// Input: byte 0 layout and features, byte 1 queue size, byte 2 receive buffer size (mergeable),
// then ops (op % 8: 0-3 deliver a frame, 4-5 receive a burst, 6 drain without refilling,
// 7 refill). Each delivered frame then reads one tamper byte (0x80 set: lie), and its lies.
#if canImport(Glibc)
import Glibc
#endif
import FuzzReplay
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let script = Script(UnsafeBufferPointer(start: data, count: size))
    let mode = script.u8()
    var o = SoftNetOptions()
    o.backend = .null
    o.nullRate = 0
    o.packed = mode & 1 != 0
    o.mergeable = mode & 2 != 0
    o.inOrder = mode & 4 != 0
    o.eventIdx = mode & 8 != 0
    o.controlQueue = false
    o.indirect = false
    let sizeByte = script.u8()
    o.queueSize = o.packed ? Int(sizeByte % 64) + 1 : 1 << Int(sizeByte % 7)
    o.dmaBytes = 2 << 20
    guard let f = try? SoftPCIFunction.net(o) else { fatalError("soft:net \(o) did not build") }
    f.personality.rxTamper = { header, lengths in script.tamper(header, lengths) }
    var a = NetAttachOptions()
    a.queueSize = o.queueSize
    a.timeoutMilliseconds = 50
    let sizes = [12, 13, 64, 100, 256, 1024, 2048, 4096]
    if o.mergeable { a.receiveBufferSize = sizes[Int(script.u8() % 8)] }
    let net: NetDevice<PCITransport<SoftPCIFunction<SoftNet>>>
    do { net = try NetDevice(transport: try PCITransport(function: f), options: a) } catch {
        fatalError("attach to an honest soft:net failed: \(error)")
    }
    var model = NetRxModel(queue: net.rx(0), mergeable: o.mergeable)
    var burst = net.rx(0).pointee.makeBurst(capacity: 8)
    var frame = [UInt8](repeating: 0xEE, count: 1514)
    var steps = 0
    while !script.isEmpty, steps < 4096 {
        steps += 1
        let op = script.u8()
        switch op % 8 {
        case 0...3:
            // An honest frame: 14-1514 bytes, magic and sequence at 14..23 (when it is long enough).
            let length = 14 + Int(script.u16()) % 1501
            let seq = model.nextSequence
            frame.withUnsafeMutableBytes { b in NetRxModel.stamp(b, length: length, sequence: seq) }
            let result = frame.withUnsafeBytes { f.receive(pair: 0, frame: UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
            model.delivered(result, length: length)
        case 4, 5, 6:
            let refilling = op % 8 != 6
            do {
                let n = try net.rx(0).pointee.receive(into: &burst, refilling: refilling)
                model.received(burst, count: n, lied: script.lied, lent: net.rx(0).pointee.lentSlots)
            } catch {
                model.threw(error, lied: script.lied)
            }
        default:
            do { try net.rx(0).pointee.refill() } catch { model.threw(error, lied: script.lied) }
        }
    }
    return 0
}

/// The input, read front to back by the op loop and by the device's tamper hook (same thread:
/// the soft device writes a frame inside `receive(pair:frame:)`). Past the end every read is 0.
final class Script: @unchecked Sendable {
    let bytes: UnsafeBufferPointer<UInt8>
    var at = 0
    /// The device has lied at least once (a violation the driver reports is then fair).
    var lied = false
    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }
    var isEmpty: Bool { at >= bytes.count }
    func u8() -> UInt8 {
        defer { at += 1 }
        return at < bytes.count ? bytes[at] : 0
    }
    func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }

    /// One tamper byte per frame: 0x80 clear leaves it honest; else bit 0 rewrites a header byte,
    /// bit 1 num_buffers, bit 2 one buffer's used length.
    func tamper(_ header: UnsafeMutableRawBufferPointer, _ lengths: UnsafeMutableBufferPointer<UInt32>) {
        let t = u8()
        guard t & 0x80 != 0 else { return }
        if t & 1 != 0 {
            let k = Int(u8() % 10), v = u8()
            if header[k] != v { header[k] = v; lied = true }
        }
        if t & 2 != 0 {
            let v = u16()
            if header[10] != UInt8(v & 0xff) || header[11] != UInt8(v >> 8) { lied = true }
            header[10] = UInt8(v & 0xff)
            header[11] = UInt8(v >> 8)
        }
        if t & 4 != 0, lengths.count > 0 {
            let k = Int(u8()) % lengths.count
            let v = t & 8 != 0 ? UInt32(u16()) : lengths[k] &+ UInt32(u8()) &- 128
            if lengths[k] != v { lengths[k] = v; lied = true }
        }
    }
}

#if !FUZZING
/// Without libFuzzer: replays crash files (or directories of them).
@main
enum Replay {
    static func main() { FuzzReplay.run(fuzzOne) }
}
#endif
