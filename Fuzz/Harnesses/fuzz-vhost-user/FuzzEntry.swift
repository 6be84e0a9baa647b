// fuzz-vhost-user: vhost-user messages from an untrusted frontend.
//   mode 0  the payload decoders alone (Wire.swift): every payload kind, with round trips;
//   mode 1  the backend: a u16 length L, then L bytes copied to the start of the frontend's memory
//           (rings and requests the device may find), then the rest cut into messages (12-byte header, then as many payload
//           bytes as it announces, or what is left) and sent to VhostUserBackend.serve hosting a
//           real software blk device. SET_MEM_TABLE messages carry one memfd per region they
//           announce (up to 8; a 1 MiB memfd), KICK/CALL/ERR one eventfd unless NOFD: so tables
//           map, rings start and the device runs on whatever ring addresses the input names.
// Nothing may trap, and after each input no ring may still run (the backend resets the device).
//
// Input: byte 0 picks the mode, the rest is that mode's bytes.
#if canImport(Glibc)
import Glibc
#endif
import CShim
import FuzzReplay
import VhostUser
import VirtioCore
import VirtioSoftDevice
import VirtioWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] % 2 == 0 { decoders(bytes) } else { backend(bytes) }
    return 0
}

// MARK: mode 0

func decoders(_ p: [UInt8]) {
    if let s = try? VringState(decoding: p, "x") { precondition((try? VringState(decoding: s.encoded, "x")) == s, "vring state round trip") }
    if let a = try? VringAddress(decoding: p) { precondition((try? VringAddress(decoding: a.encoded)) == a, "vring address round trip") }
    if let f = try? VringFile(decoding: p, "x") { precondition((try? VringFile(decoding: f.encoded, "x")) == f, "vring file round trip") }
    if let t = try? VhostMemoryTable(decoding: p) {
        precondition(t.regions.count >= 1 && t.regions.count <= 8, "table region count")
        precondition((try? VhostMemoryTable(decoding: t.encoded)) == t, "memory table round trip")
    }
    if let c = try? VhostConfigPayload(decoding: p, "x") {
        precondition(c.data.count <= 256 && (try? VhostConfigPayload(decoding: c.encoded, "x")) == c, "config round trip")
    }
    if p.count >= 12 {
        let m = VhostUserMessage(request: LEReader(p).u32(0), flags: LEReader(p).u32(4), payload: Array(p.dropFirst(12)))
        _ = (m.name, m.isReply, m.needsReply, m.versionOK, m.kind?.hasReply, m.kind?.descriptorCount)
        precondition(VhostUserMessage.payloadSize(header: m.bytes) == m.payload.count, "header size")
    }
}

// MARK: mode 1

/// The hosting API as VirtioAttach declares it (this target links no device opening).
extension SoftPCIFunction: VhostUserHostedDevice {}

/// The hosted device: small, so each input is cheap; its own poller is off (kicks serve it).
let device = try! SoftPCIFunction.block({
    var o = SoftBlockOptions()
    o.size = 1 << 20
    o.queues = 2
    o.queueSize = 64
    o.dmaBytes = 1 << 20
    return o
}())
let backendServer = try! VhostUserBackend(path: "\u{0}fuzz-vhost-user-\(getpid())", device: device)
let memory: Int32 = {
    let fd = cshim_memfd_create("fuzz-vhost-user")
    precondition(fd >= 0 && ftruncate(fd, 1 << 20) == 0, "memfd: \(errno)")
    return fd
}()

/// Lays the memory image down, cuts the rest into messages and sends each with the descriptors
/// its request takes (a kick eventfd already signalled, so a started ring is served at once).
func backend(_ input: [UInt8]) {
    let imageLength = min(Int(LEReader(input).u16(0)), max(input.count - 2, 0))
    _ = ftruncate(memory, 0)  // zero the memory cheaply, then write the image
    _ = ftruncate(memory, 1 << 20)
    if imageLength > 0 { _ = input[2..<(2 + imageLength)].withUnsafeBytes { pwrite(memory, $0.baseAddress, $0.count, 0) } }
    let bytes = Array(input.dropFirst(min(2 + imageLength, input.count)))
    var pair: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        fatalError("socketpair: \(errno)")
    }
    for fd in pair { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
    // Nobody reads the replies until serve returns: they must all fit (as in fuzz-vfio-user).
    var buffer: Int32 = 1 << 20
    _ = setsockopt(pair[1], SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
    _ = setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
    var at = 0
    var opened: [Int32] = []
    while at + 12 <= bytes.count {
        let r = LEReader(Array(bytes[at..<at + 12]))
        let request = r.u32(0)
        let length = min(Int(r.u32(8)), bytes.count - at - 12)
        let payload = Array(bytes[(at + 12)..<(at + 12 + length)])
        var fds: [Int32] = []
        switch request {
        case VhostUserRequest.setMemTable.rawValue:
            fds = Array(repeating: memory, count: min(Int(LEReader(payload).u32(0)), 8))
        case VhostUserRequest.setVringKick.rawValue, VhostUserRequest.setVringCall.rawValue, VhostUserRequest.setVringErr.rawValue:
            if LEReader(payload).u64(0) & VhostUserWire.noFDBit == 0 {
                let e = cshim_eventfd(0, 1)
                var one: UInt64 = 1
                if request == VhostUserRequest.setVringKick.rawValue { _ = write(e, &one, 8) }
                fds = [e]
                opened.append(e)
            }
        default: break
        }
        // The header as the input has it (its size may lie); the payload actually present.
        let wire = Array(bytes[at..<at + 12]) + payload
        let sent = wire.withUnsafeBytes { b in fds.withUnsafeBufferPointer { f in
            cshim_send_with_fds(pair[0], b.baseAddress, b.count, f.baseAddress, Int32(f.count), 0)
        } }
        if sent != wire.count { break }
        at += 12 + length
    }
    if at < bytes.count { _ = bytes[at...].withUnsafeBytes { write(pair[0], $0.baseAddress, $0.count) } }  // a trailing half header
    for e in opened { close(e) }  // the backend holds its own copies, closed at teardown
    shutdown(pair[0], Int32(SHUT_WR))
    backendServer.serve(VhostUserChannel(fd: pair[1], peer: "fuzz frontend"))  // closes pair[1]
    close(pair[0])
    for q in 0..<2 { precondition(!device.hostQueueRunning(q), "ring \(q) still runs after the frontend left") }
}

#if !FUZZING
/// Without libFuzzer: replays crash files (or directories of them).
@main
enum Replay {
    static func main() { FuzzReplay.run(fuzzOne) }
}
#endif
