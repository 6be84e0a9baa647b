import Foundation
import Synchronization
import Testing
import VFIOUser
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice

/// How a scripted peer misbehaves once it reaches the message it stalls at.
enum Stall: String, CaseIterable, Sendable {
    /// Takes the command and never answers.
    case silent
    /// Sends 7 of the 16 bytes of a reply header, then nothing.
    case halfHeader
    /// Sends a whole header announcing 80 bytes and 10 of them, then nothing.
    case midReply
}

/// A vfio-user proxy in front of a real server (our software device on a thread): it forwards
/// every message both ways until the client's `stallAt`-th command that wants a reply, then
/// stalls as `mode` says, holding the connection open until the client goes away (or 15 s).
final class StallingProxy: @unchecked Sendable {
    let path: String
    let served: ServedDevice<SoftPCIFunction<SoftBlock>>
    let listener: Int32
    let finished = Atomic<Bool>(false)
    /// Commands that wanted a reply, counted as they passed.
    let commands = Atomic<Int>(0)

    init(_ mode: Stall, stallAt: Int, device: SoftBlockOptions = SoftBlockOptions()) throws {
        served = try ServedDevice(try SoftPCIFunction.block(device))
        path = "/tmp/vu-stall-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { for (i, b) in path.utf8.enumerated() { $0[i] = b } }
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        listen(listener, 1)
        let t = Thread { [self] in
            relay(mode, stallAt: stallAt)
            finished.store(true, ordering: .releasing)
        }
        t.start()
    }

    /// Ends the proxy and the server behind it; every fd it held is closed on return.
    func shutdown() {
        while !finished.load(ordering: .acquiring) { usleep(1000) }
        close(listener)
        unlink(path)
        served.shutdown()
    }

    private func relay(_ mode: Stall, stallAt: Int) {
        let bound = { monotonicNanoseconds() + 15_000_000_000 }
        var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 15_000) == 1 else { return }
        let client = VFIOUserConnection(fd: accept(listener, nil, nil), peer: "proxy client")
        guard let server = try? VFIOUserConnection.connect(path: served.path) else { return }
        do {
            while true {
                let m = try client.receive(deadline: bound())
                defer { for f in m.fds { close(f) } }
                if m.header.wantsReply, commands.add(1, ordering: .relaxed).newValue == stallAt {
                    try stall(mode, replyingTo: m, on: client)
                    // Hold the connection; anything more the client sends is ignored, until it leaves.
                    while true { _ = try client.receive(deadline: bound()) }
                }
                try server.send(m)
                guard m.header.wantsReply else { continue }
                let r = try server.receive(deadline: bound())
                defer { for f in r.fds { close(f) } }
                try client.send(r)
            }
        } catch {}
    }

    private func stall(_ mode: Stall, replyingTo m: VFIOUserMessage, on c: VFIOUserConnection) throws {
        let header = VFIOUserHeader(messageID: m.header.messageID, command: m.header.command, size: 80, flags: VFIOUserHeader.reply)
        let bytes: [UInt8]
        switch mode {
        case .silent: return
        case .halfHeader: bytes = Array(header.encoded.prefix(7))
        case .midReply: bytes = header.encoded + [UInt8](repeating: 0, count: 10)
        }
        _ = bytes.withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
}

/// Every wait on a vfio-user peer is bounded: a silent server, one that sends half a header, and
/// one that stalls inside a reply each fail the waiting call within the bound, naming the socket
/// and the command, and leave nothing open (the suite is leak-checked).
@Suite(.serialized, .leakChecked) struct PeerTimeoutTests {
    /// Stall points: VERSION (the first command), the capability walk, and the block driver's attach.
    static let stallPoints = [1, 14, 45]

    @Test(arguments: Stall.allCases, stallPoints)
    func aStalledServerFailsTheCallWithinTheBound(_ mode: Stall, _ stallAt: Int) throws {
        let proxy = try StallingProxy(mode, stallAt: stallAt)
        defer { proxy.shutdown() }
        let start = Date()
        do {
            let f = try VFIOUserFunction(path: proxy.path, dmaBytes: 4 << 20, timeoutMilliseconds: 300)
            let t = try PCITransport(function: f)
            let blk = try BlockDevice(transport: t)
            Issue.record("attached through a server that stalls at command \(stallAt): \(blk.queueCount) queue(s)")
        } catch {
            let text = "\(error)"
            #expect(text.contains(proxy.path) && text.contains("within 300 ms"), "\(mode) at \(stallAt): \(text)")
            #expect(!text.contains("the vfio-user server is gone") || stallAt > 1, "the first failure says what it waited for: \(text)")
        }
        #expect(proxy.commands.load(ordering: .relaxed) >= stallAt, "the stall was reached")
        #expect(Date().timeIntervalSince(start) < 1.3, "\(mode) at \(stallAt) took \(Date().timeIntervalSince(start)) s")
    }

    /// Once a call timed out the function is gone: later calls fail at once, teardown waits on nothing.
    @Test func afterATimeoutEveryCallFailsAtOnce() throws {
        let proxy = try StallingProxy(.silent, stallAt: 12)
        defer { proxy.shutdown() }
        let f = try VFIOUserFunction(path: proxy.path, dmaBytes: 4 << 20, timeoutMilliseconds: 200)
        _ = try f.configRead(offset: 0, width: 2)  // command 11 passes
        #expect(throws: PCIError.self) { try f.configRead(offset: 0, width: 2) }
        #expect(!f.isConnected)
        let start = Date()
        #expect(throws: PCIError.self) { try f.configRead(offset: 2, width: 2) }
        #expect(Date().timeIntervalSince(start) < 0.1)
    }

    /// Two callers at once on a server that went silent: the one queued behind the lock fails as
    /// soon as the first times out, not after a bound of its own (1 s here, so 2 s if serialised).
    @Test func queuedCallersFailWithTheFirstTimeout() throws {
        let proxy = try StallingProxy(.silent, stallAt: 11)
        defer { proxy.shutdown() }
        let f = try VFIOUserFunction(path: proxy.path, dmaBytes: 4 << 20, timeoutMilliseconds: 1000)
        final class Done: Sendable { let count = Atomic<Int>(0) }
        let done = Done()
        let start = Date()
        for offset in [0, 2] {
            Thread { _ = try? f.configRead(offset: offset, width: 2); done.count.add(1, ordering: .releasing) }.start()
        }
        while done.count.load(ordering: .acquiring) < 2 { usleep(1000) }
        #expect(Date().timeIntervalSince(start) < 1.6, "took \(Date().timeIntervalSince(start)) s")
        #expect(!f.isConnected)
    }

    /// The CLI: `info`, `blk read` and `attach` exit non-zero within the bound (plus 1 s), naming
    /// the socket, whether the bound comes from `--peer-timeout` or the spelling's `timeout=`.
    @Test(arguments: Stall.allCases)
    func verbsExitNonZeroNamingTheSocket(_ mode: Stall) throws {
        let verbs: [[String]] = [["info"], ["blk", "read", "--lba", "0", "--blocks", "1"], ["attach", "--duration", "1"]]
        for (i, verb) in verbs.enumerated() {
            let proxy = try StallingProxy(mode, stallAt: [1, 30, 45][i])
            defer { proxy.shutdown() }
            let useKey = i % 2 == 0
            let device = "vfio-user:\(proxy.path)" + (useKey ? ",timeout=400" : "")
            let args = Array(verb.prefix(verb[0] == "blk" ? 2 : 1)) + [device] + Array(verb.dropFirst(verb[0] == "blk" ? 2 : 1))
                + (useKey ? [] : ["--peer-timeout", "400"])
            let start = Date()
            let (rc, _, err) = try virtioctl(args)
            let took = Date().timeIntervalSince(start)
            #expect(rc != 0, "\(args): \(err)")
            #expect(err.contains(proxy.path) && err.contains("within 400 ms"), "\(args): \(err)")
            #expect(took < 1.4, "\(args) took \(took) s")
        }
    }

    /// A server whose listen backlog is full (it serves one client at a time and is stuck): connect
    /// itself is bounded, and says why.
    @Test func aFullBacklogBoundsConnect() throws {
        let path = "/tmp/vu-backlog-\(getpid()).sock"
        unlink(path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { for (i, b) in path.utf8.enumerated() { $0[i] = b } }
        let len = socklen_t(MemoryLayout<sockaddr_un>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) } }
        listen(listener, 0)
        var queued: [Int32] = []
        defer { for q in queued { close(q) }; close(listener); unlink(path) }
        // Fill the backlog with non-blocking connects until one would wait.
        while queued.count < 16 {
            let q = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(q, $0, len) } }
            if rc != 0 { close(q); break }
            queued.append(q)
        }
        let start = Date()
        do {
            _ = try VFIOUserFunction(path: path, dmaBytes: 1 << 20, timeoutMilliseconds: 300)
            Issue.record("connected through a full backlog")
        } catch {
            #expect("\(error)".contains("took no new connection within 300 ms"), "\(error)")
        }
        #expect(Date().timeIntervalSince(start) < 1.3)
    }

    @Test func badTimeoutSpellingsAreRefused() throws {
        for (args, words) in [(["info", "vfio-user:/tmp/x.sock,timeout=0"], "timeout=0"),
                              (["info", "vfio-user:/tmp/x.sock,timeout=abc"], "timeout=abc"),
                              (["info", "vfio-user:/tmp/x.sock,speed=3"], "unknown key 'speed=3'"),
                              (["info", "vfio-user:/tmp/x.sock", "--peer-timeout", "5"], "--peer-timeout must be"),
                              // A comma inside the path stays in the path; only trailing key=value pieces are keys.
                              (["info", "vfio-user:/tmp/no,such.sock,timeout=500"], "cannot connect to vfio-user server /tmp/no,such.sock")] {
            let (rc, _, err) = try virtioctl(args)
            #expect(rc != 0 && err.contains(words), "\(args): \(err)")
        }
    }
}
