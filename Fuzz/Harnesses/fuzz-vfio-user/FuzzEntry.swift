// fuzz-vfio-user: vfio-user messages from a peer, in both directions.
//   mode 0  the wire decoders alone (Wire.swift): header, VERSION payload, error rendering;
//   mode 1  requests: the bytes are what a client sends to VFIOUserServer (framing in
//           VFIOUserConnection.receive, then each command's payload decode in the server);
//   mode 2  replies: a scripted server answers VFIOUserFunction's requests (its start-up, then
//           register access and MSI-X set-up), now and then sending DMA_READ/DMA_WRITE of its own.
// Nothing may trap; the hosted device also traps if the server hands it an access outside
// what the PCIFunction contract allows.
//
// Input: byte 0 picks the mode, the rest is that mode's bytes.
#if canImport(Glibc)
import Glibc
#endif
import CShim
import VFIOUser
import VirtioPCI
import VirtioRing
import FuzzReplay

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 3 {
    case 0: wire(bytes)
    case 1: serveRequests(bytes)
    default: clientAgainstScript(bytes)
    }
    return 0
}

// MARK: mode 0

func wire(_ bytes: [UInt8]) {
    let h = VFIOUserHeader(decoding: bytes)
    precondition(VFIOUserHeader(decoding: h.encoded) == h, "header does not round-trip")
    _ = (h.isReply, h.isError, h.wantsReply, VFIOUserCommand(rawValue: h.command))
    // What a client makes of an error reply, as virtioctl prints it.
    if h.isError { _ = VFIOUserError.remote(command: h.command, errno: h.error).description }
    if let v = VFIOUserPayload.parseVersion(Array(bytes.dropFirst(VFIOUserHeader.length))) {
        precondition(VFIOUserPayload.parseVersion(VFIOUserPayload.version(major: v.major, minor: v.minor, json: v.json))?.json == v.json,
                     "VERSION payload does not round-trip")
    }
}

// MARK: mode 1: requests to the server

/// A device with small regions: every reply then fits the socket buffer, so one thread suffices.
final class HostedDevice: VFIOUserHostedDevice, @unchecked Sendable {
    let address = "fuzz:hosted"
    var config = [UInt8](repeating: 0, count: 256)
    var bars: [[UInt8]] = [[UInt8](repeating: 0, count: 64), [UInt8](repeating: 0, count: 32)]
    let arena = try! DMAArena(size: 4096)
    var configSpaceSize: Int { config.count }
    var dma: any DMAAllocator { arena }

    /// The PCIFunction contract the server must keep: config widths 1/2/4, BAR widths 1/2/4/8, in range.
    /// `what` is rendered only when the check fails (the server makes up to 256 accesses per message).
    func checked(_ what: @autoclosure () -> String, _ offset: Int, _ width: Int, _ limit: Int, wide: Bool) {
        precondition((width == 1 || width == 2 || width == 4 || (wide && width == 8)) && offset >= 0 && offset <= limit - width,
                     "server passed a \(what()) access of \(width) bytes at \(offset) (limit \(limit))")
    }
    func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 {
        checked("config read", offset, width, config.count, wide: false)
        return (0..<width).reduce(0) { $0 | UInt32(config[offset + $1]) << (8 * UInt32($1)) }
    }
    func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {
        checked("config write", offset, width, config.count, wide: false)
        for i in 0..<width { config[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }
    func bar(_ index: Int) -> BARInfo? {
        index >= 0 && index < bars.count ? BARInfo(size: bars[index].count, isMemory: true, mapped: nil) : nil
    }
    func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        guard index >= 0 && index < bars.count else { throw .noSuchBAR(index) }
        checked("BAR \(index) read", offset, width, bars[index].count, wide: true)
        return (0..<width).reduce(0) { $0 | UInt64(bars[index][offset + $1]) << (8 * UInt64($1)) }
    }
    func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) {
        guard index >= 0 && index < bars.count else { throw .noSuchBAR(index) }
        checked("BAR \(index) write", offset, width, bars[index].count, wide: true)
        for i in 0..<width { bars[index][offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
    func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] { [] }
    func disableInterrupts() {}
    func adoptDMA(pointer: UnsafeMutableRawPointer, length: Int, address: UInt64, owner: AnyObject?) -> String? { nil }
    func dropDMA() -> String? { nil }
    func useInterruptEventFDs(_ fds: [Int32]) {}
    func resetDevice() {}
}

/// Abstract socket names (leading NUL): nothing is left behind in the file system.
let server = try! VFIOUserServer(path: "\u{0}fuzz-vfio-user-server-\(getpid())", device: HostedDevice())

/// Writes the bytes into one end of a socket pair, closes that direction, and lets the server
/// serve the other end until it reads EOF. Non-blocking ends: a reply that does not fit ends the
/// session (send fails) instead of deadlocking this single thread.
func serveRequests(_ bytes: [UInt8]) {
    var pair: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        fatalError("socketpair: \(errno)")
    }
    for fd in pair { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
    // Nobody reads pair[0] until serve returns: every reply must fit pair[1]'s send buffer. At the
    // default 208 KiB about 230 small replies (~0.9 KiB of skb each) fill it, and the send then waits
    // out the server's 5 s send timeout. 2 MiB holds the replies to any input under max_len 4096.
    var sndbuf: Int32 = 1 << 20
    _ = setsockopt(pair[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, socklen_t(MemoryLayout<Int32>.size))
    _ = bytes.withUnsafeBytes { write(pair[0], $0.baseAddress, $0.count) }
    shutdown(pair[0], Int32(SHUT_WR))
    server.serve(VFIOUserConnection(fd: pair[1], peer: "fuzz client"))  // closes pair[1]
    close(pair[0])
}

// MARK: mode 2: replies to the client

let clientPath = "\u{0}fuzz-vfio-user-client-\(getpid())"
/// The scripted server's listening socket, made once per process.
let listener: Int32 = {
    let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { for (i, b) in clientPath.utf8.enumerated() { $0[i] = b } }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    precondition(rc == 0 && listen(s, 4) == 0, "cannot listen for the scripted server: \(errno)")
    return s
}()

/// The scripted server's one thread, started once: each input hands it a script (`scriptReady`)
/// and waits until it is done with it (`scriptDone`), as pthread_join did with a thread per input.
nonisolated(unsafe) var pendingScript: ScriptedServer?
nonisolated(unsafe) let scriptReady = newSemaphore()
nonisolated(unsafe) let scriptDone = newSemaphore()
func newSemaphore() -> UnsafeMutablePointer<sem_t> {
    let s = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    precondition(sem_init(s, 0, 0) == 0, "sem_init: \(errno)")
    return s
}
func waitOn(_ s: UnsafeMutablePointer<sem_t>) { while sem_wait(s) != 0 {} }  // EINTR
func serveScripts() -> Never {
    while true {
        waitOn(scriptReady)
        pendingScript!.run()
        pendingScript = nil
        sem_post(scriptDone)
    }
}
let scriptThread: pthread_t = {
    // Both threads on one CPU (the server thread inherits it): every request/reply hand-off is then
    // a local context switch, not a cross-CPU wake-up, which on this VM costs several times more.
    _ = cshim_pin_current_thread(0)
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { _ in serveScripts() }, nil)
    precondition(rc == 0, "pthread_create: \(rc)")
    return thread
}()

/// Byte 0: how many op bytes follow (mod 32); then the ops the client runs after start-up, then the server's script.
func clientAgainstScript(_ bytes: [UInt8]) {
    let opCount = min(Int(bytes.first ?? 0) % 32, max(bytes.count - 1, 0))
    let ops = Array(bytes.dropFirst().prefix(opCount))
    _ = listener
    _ = scriptThread
    pendingScript = ScriptedServer(script: Array(bytes.dropFirst(1 + opCount)))
    sem_post(scriptReady)
    do {
        let f = try VFIOUserFunction(path: clientPath, dmaBytes: 16384)
        var i = 0
        while i + 3 < ops.count {
            let (op, a, b, c) = (ops[i], Int(ops[i + 1]), ops[i + 2], ops[i + 3])
            let width = [1, 2, 4, 8][Int(b % 4)], bar = Int(b >> 2) % 7
            do throws(PCIError) {
                switch op % 6 {
                case 0: _ = try f.configRead(offset: a, width: min(width, 4))
                case 1: try f.configWrite(offset: a, width: min(width, 4), value: UInt32(c))
                case 2: if f.bar(bar) != nil { _ = try f.barRead(bar, offset: a, width: width) }
                case 3: if f.bar(bar) != nil { try f.barWrite(bar, offset: a, width: width, value: UInt64(c)) }
                case 4: _ = try f.enableMSIX(vectors: Int(c % 4) + 1)
                default: f.disableInterrupts()
                }
            } catch {
                _ = error.description
            }
            i += 4
        }
        _ = f.backendDetails
    } catch {
        _ = error.description  // what virtioctl prints
    }
    waitOn(scriptDone)
}

/// Answers whatever the client sends from a script. Each step sends one message: either a reply
/// to the request the client waits on (honest, or with the id, command, flags, error or size
/// changed), or a DMA_READ/DMA_WRITE of its own, which the client answers before it waits on.
final class ScriptedServer {
    var script: [UInt8]
    var at = 0
    init(script: [UInt8]) { self.script = script }

    func u8() -> UInt8 { defer { at += 1 }; return at < script.count ? script[at] : 0 }
    func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    /// n script bytes (zeros past the end), as n calls of u8() would give, without a closure per byte (n is up to 19999).
    func take(_ n: Int) -> [UInt8] {
        var out = Array(script[min(at, script.count)..<min(at + n, script.count)])
        out += repeatElement(0, count: n - out.count)
        at += n
        return out
    }
    /// Where skipped payloads land (never looked at): no zeroed array per message.
    var sink = [UInt8](repeating: 0, count: 1 << 16)

    func run() {
        var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 5000) == 1 else { return }
        let c = accept(listener, nil, nil)
        guard c >= 0 else { return }
        defer { close(c) }
        var waiting: VFIOUserHeader?
        while let m = readMessage(c) {
            if !m.isReply { waiting = m.wantsReply ? m : nil }
            // Out of script: closing is the last answer (the client sees the server go away).
            guard let request = waiting, at < script.count else { if waiting != nil { return } else { continue } }
            let ctl = u8()
            var out: VFIOUserHeader
            var payload: [UInt8]
            if ctl & 0x40 != 0 {
                // A server command: address near the client's DMA window (it starts at 0x1_0000_0000) or anywhere.
                let address = ctl & 0x20 != 0 ? UInt64(u32()) << 16 | UInt64(u16()) : 0x1_0000_0000 + UInt64(u16())
                let count = UInt64(u16()) % 20000
                let write = ctl & 1 != 0
                payload = VFIOUserPayload.dmaAccess(address: address, count: count,
                                                    data: write ? take(ctl & 2 != 0 ? Int(u8()) : Int(count)) : [])
                out = VFIOUserHeader(messageID: u16(), command: write ? 12 : 11, size: 0)
            } else {
                payload = take(ctl & 0x20 != 0 ? Int(u16()) % 1024 : Int(u8()))
                out = VFIOUserHeader(messageID: ctl & 1 != 0 ? u16() : request.messageID,
                                     command: ctl & 2 != 0 ? u16() : request.command, size: 0,
                                     flags: ctl & 8 != 0 ? u32() : VFIOUserHeader.reply)
                if ctl & 4 != 0 {
                    out.flags |= VFIOUserHeader.errorFlag
                    out.error = u32()
                }
            }
            out.size = UInt32(VFIOUserHeader.length + payload.count)
            // A size that frames nothing (under the header, over the limit), sent without a payload:
            // the client rejects the header alone, and nothing is left in the stream to make it wait.
            if ctl & 0x10 != 0 {
                let lie = u32()
                if lie < 16 || lie > UInt32(VFIOUserConst.maxMessage) { (out.size, payload) = (lie, []) }
            }
            if out.isReply { waiting = nil }
            guard writeAll(c, out.encoded + payload) else { return }
        }
    }

    /// One whole message from the client (its payload skipped), or nil at EOF.
    func readMessage(_ fd: Int32) -> VFIOUserHeader? {
        guard let head = readExactly(fd, VFIOUserHeader.length) else { return nil }
        let h = VFIOUserHeader(decoding: head)
        guard h.size >= 16, skip(fd, Int(h.size) - 16) else { return nil }
        return h
    }

    /// readExactly without keeping the bytes.
    func skip(_ fd: Int32, _ n: Int) -> Bool {
        var left = n
        while left > 0 {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 5000) == 1 else { return false }
            let r = sink.withUnsafeMutableBytes { read(fd, $0.baseAddress!, min(left, $0.count)) }
            guard r > 0 else { return false }
            left -= r
        }
        return true
    }

    func readExactly(_ fd: Int32, _ n: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 5000) == 1 else { return nil }
            let r = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
            guard r > 0 else { return nil }
            got += r
        }
        return out
    }

    func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let r = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            guard r > 0 else { return false }
            done += r
        }
        return true
    }
}

#if !FUZZING
/// Without libFuzzer: replays crash files (or directories of them).
@main
enum Replay {
    static func main() { FuzzReplay.run(fuzzOne) }
}
#endif
