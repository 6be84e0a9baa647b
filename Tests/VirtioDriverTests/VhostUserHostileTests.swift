import CShim
import Foundation
import HostIO
import Synchronization
import Testing
import VhostUser
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice
import VirtioWire

/// A raw frontend for hostile-frontend tests: a connection that has negotiated REPLY_ACK.
struct RawFrontend {
    let c: VhostUserChannel

    init(_ path: String) throws {
        c = try VhostUserChannel.connect(path: path, timeoutMilliseconds: 2_000)
        try c.send(VhostUserMessage(.setProtocolFeatures, payload: VhostUserU64.encode(1 << 3 | 1 << 9 | 1)))
    }

    /// Sends `m` with NEED_REPLY and returns the ack (0 success, 1 refused), or nil when the backend hung up.
    func ack(_ request: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) throws -> UInt64? {
        try c.send(VhostUserMessage(request, needReply: true, payload: payload, fds: fds))
        return try? VhostUserU64.decode(try c.receive(deadline: monotonicNanoseconds() + 2_000_000_000).payload, "ack")
    }

    /// True when the backend closes the connection within two seconds.
    var hungUp: Bool {
        (try? c.receive(deadline: monotonicNanoseconds() + 2_000_000_000)) == nil
    }

    func features() throws -> UInt64? {
        try ack(.setFeatures, VhostUserU64.encode(1 << 32 | 1 << 30))
    }
}

/// One memfd of `size` bytes (the caller closes it).
func memfd(_ size: Int) -> Int32 {
    let fd = cshim_memfd_create("hostile")
    _ = ftruncate(fd, off_t(size))
    return fd
}

@Suite(.serialized, .leakChecked) struct VhostUserHostileFrontendTests {
    /// Each hostile message gets a refusal naming the rule (or the connection ends), and the
    /// backend then serves a well-behaved frontend as if nothing happened.
    @Test func theBackendRefusesAHostileFrontendAndStaysUp() throws {
        let served = try ServedVhostDevice(try softBlock("size=4M,queues=1"), timeoutMilliseconds: 300)
        defer { served.shutdown() }
        func refusal(_ text: String) -> Bool { served.refusals.withLock { $0.contains { $0.contains(text) } } }
        let region = 1 << 20, uaddr: UInt64 = 0x1000_0000
        func table(_ regions: [(UInt64, UInt64)], size: Int = region) -> [UInt8] {
            VhostMemoryTable(regions: regions.map { VhostMemoryRegion(guestAddress: $0.0, size: UInt64(size), userAddress: $0.1, mmapOffset: 0) }).encoded
        }
        do {  // per-ring messages before SET_FEATURES
            let f = try RawFrontend(served.path)
            #expect(try f.ack(.setVringNum, VringState(index: 0, num: 64).encoded) == 1)
            #expect(refusal("SET_VRING_NUM for ring 0 before SET_FEATURES"))
        }
        do {  // a ring index past the queue count; a GET for it cannot be answered
            let f = try RawFrontend(served.path)
            #expect(try f.features() == 0)
            #expect(try f.ack(.setVringNum, VringState(index: 99, num: 64).encoded) == 1)
            #expect(refusal("for ring 99, past the 1 ring(s)"))
            try f.c.send(VhostUserMessage(.getVringBase, payload: VringState(index: 7, num: 0).encoded))
            #expect(f.hungUp)
        }
        do {  // memory tables: overlapping, the wrong fd count, not memory, a file too short
            let f = try RawFrontend(served.path)
            let m = memfd(region), e = cshim_eventfd(0, 1), short = memfd(4096)
            defer { close(m); close(e); close(short) }
            #expect(try f.ack(.setMemTable, table([(0, uaddr), (0x8_0000, uaddr + 0x100_0000)]), fds: [m, m]) == 1)
            #expect(refusal("overlap in guest-physical addresses"))
            #expect(try f.ack(.setMemTable, table([(0, uaddr)]), fds: []) == 1)
            #expect(refusal("carries 0 file descriptor(s) for 1 region(s)"))
            #expect(try f.ack(.setMemTable, table([(0, uaddr)]), fds: [e]) == 1)
            #expect(refusal("not a memory file"))
            #expect(try f.ack(.setMemTable, table([(0, uaddr)]), fds: [short]) == 1)
            #expect(refusal("shorter than mmap offset + size"))
        }
        do {  // ring addresses outside the table
            let f = try RawFrontend(served.path)
            let m = memfd(region)
            defer { close(m) }
            #expect(try f.features() == 0)
            #expect(try f.ack(.setMemTable, table([(0x4000_0000, uaddr)]), fds: [m]) == 0)
            #expect(try f.ack(.setVringNum, VringState(index: 0, num: 64).encoded) == 0)
            let outside = VringAddress(index: 0, descriptors: uaddr + UInt64(region) - 512, used: uaddr + 0x2000, avail: uaddr + 0x1000)
            #expect(try f.ack(.setVringAddr, outside.encoded) == 1)
            #expect(refusal("a ring area lies outside every memory region"))
        }
        do {  // a call "eventfd" that is a pipe (a write to it could block the device); a packed base past the ring
            let f = try RawFrontend(served.path)
            var pipeFDs: [Int32] = [-1, -1]
            _ = pipe(&pipeFDs)
            defer { close(pipeFDs[0]); close(pipeFDs[1]) }
            #expect(try f.ack(.setVringCall, VringFile(index: 0, noFD: false).encoded, fds: [pipeFDs[1]]) == 1)
            #expect(refusal("SET_VRING_CALL for ring 0: the descriptor is not an eventfd"))
            let m = memfd(region), kick = cshim_eventfd(0, 1)
            defer { close(m); close(kick) }
            #expect(try f.ack(.setFeatures, VhostUserU64.encode(1 << 32 | 1 << 30 | 1 << 34)) == 0)
            #expect(try f.ack(.setMemTable, table([(0x4000_0000, uaddr)]), fds: [m]) == 0)
            #expect(try f.ack(.setVringNum, VringState(index: 0, num: 64).encoded) == 0)
            #expect(try f.ack(.setVringBase, VringState(index: 0, num: 0x8000 | 200).encoded) == 0)
            #expect(try f.ack(.setVringAddr, VringAddress(index: 0, descriptors: uaddr, used: uaddr + 0x800, avail: uaddr + 0x400).encoded) == 0)
            #expect(try f.ack(.setVringKick, VringFile(index: 0, noFD: false).encoded, fds: [kick]) == 0)
            #expect(try f.ack(.setVringEnable, VringState(index: 0, num: 1).encoded) == 1)
            #expect(refusal("names a position past the 64-entry packed ring"))
            #expect(!served.device.hostQueueRunning(0))
            // RESET_OWNER forgets the rings and features: a fresh set-up is taken again.
            #expect(try f.ack(.resetOwner) == 0)
            #expect(try f.ack(.setVringNum, VringState(index: 0, num: 64).encoded) == 1)  // before SET_FEATURES again
            #expect(try f.features() == 0)
            #expect(try f.ack(.setMemTable, table([(0x4000_0000, uaddr)]), fds: [m]) == 0)
        }
        do {  // a descriptor on a message that takes none
            let f = try RawFrontend(served.path)
            let e = cshim_eventfd(0, 1)
            defer { close(e) }
            #expect(try f.ack(.setOwner, fds: [e]) == 1)
            #expect(refusal("SET_OWNER carries 1 file descriptor(s); it takes 0"))
        }
        do {  // an oversized message cannot be framed: the connection ends
            let f = try RawFrontend(served.path)
            var w = LEWriter()
            w.u32(VhostUserRequest.setConfig.rawValue); w.u32(1); w.u32(1 << 20)
            _ = w.out.withUnsafeBytes { send(f.c.fd, $0.baseAddress, $0.count, 0) }
            #expect(f.hungUp)
        }
        do {  // a frontend that stalls mid-message is dropped after the bound
            let f = try RawFrontend(served.path)
            let start = Date()
            let head: [UInt8] = [1, 0, 0, 0, 1, 0]
            _ = head.withUnsafeBytes { send(f.c.fd, $0.baseAddress, $0.count, 0) }
            #expect(f.hungUp)
            #expect(Date().timeIntervalSince(start) < 2.0)
        }
        served.waitForWarnings(14)
        #expect(refusal("stalled after 6 bytes"), "\(served.refusals.withLock { $0 })")
        // And a well-behaved frontend is served normally.
        let blk = try BlockDevice(transport: try served.frontend())
        try verifiedIO(blk, device: served.device)
        #expect(served.device.log.violations.isEmpty, "\(served.device.log.violations)")
    }
}

/// A scripted backend: answers the frontend's start-up like a small blk backend, and misbehaves
/// on the request `target` as `hostile` says.
final class ScriptedBackend: @unchecked Sendable {
    let path = "/tmp/vhu-fake-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    let listenFD: Int32
    let done = Atomic<Bool>(false)

    init(target: VhostUserRequest, hostile: @escaping @Sendable (VhostUserChannel, VhostUserMessage) -> Void) throws {
        listenFD = try listenUnix(path: path)
        let fd = listenFD
        let t = Thread { [self] in
            defer { done.store(true, ordering: .releasing) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 5_000) == 1 else { return }
            let c = VhostUserChannel(fd: accept(fd, nil, nil), peer: "frontend")
            defer { c.close() }
            while let m = try? c.receive(deadline: monotonicNanoseconds() + 5_000_000_000) {
                closeFDs(m.fds)
                if m.request == target.rawValue { hostile(c, m); return }  // misbehave once, then hang up
                let reply: [UInt8]?
                switch m.kind {
                case .getFeatures: reply = VhostUserU64.encode(1 << 32 | 1 << 30 | 1 << 6)
                case .getProtocolFeatures: reply = VhostUserU64.encode(1 << 3 | 1 << 9)
                case .getConfig:
                    var cfg = [UInt8](repeating: 0, count: 60)
                    cfg[0] = 0x20; cfg[21] = 2  // capacity 32 sectors, blk_size 512
                    reply = VhostConfigPayload(offset: 0, data: cfg).encoded
                default: reply = m.needsReply ? VhostUserU64.encode(0) : nil
                }
                if let reply { try? c.send(.reply(to: m.request, payload: reply)) }
            }
        }
        t.start()
    }

    func finish() {
        for _ in 0..<6000 where !done.load(ordering: .acquiring) { usleep(1000) }
        close(listenFD)
        unlink(path)
    }
}

func closeFDs(_ fds: [Int32]) { for f in fds { close(f) } }

@Suite(.serialized, .leakChecked) struct VhostUserHostileBackendTests {
    static let modes: [(String, VhostUserRequest, String)] = [
        ("stall", .getFeatures, "awaiting the reply to GET_FEATURES"),
        ("half", .getFeatures, "stalled after 6 bytes"),
        ("oversized", .getProtocolFeatures, "over the 4096-byte limit"),
        ("wrong code", .getFeatures, "came back as SET_FEATURES"),
        ("fd", .getConfig, "carried 1 file descriptor"),
        ("bad flags", .getFeatures, "flags 0x1"),
        ("disconnect", .getProtocolFeatures, "closed the connection"),
        ("nack", .setMemTable, "refused SET_MEM_TABLE (ack 1)"),
        // The hang-up is seen at once after the ack, or by the next request: both say so.
        ("ack then close", .setOwner, "closed the connection|connection reset"),
    ]

    /// Each misbehaviour fails the frontend's start-up within its bound, with an error that
    /// says what went wrong; nothing stays open (the suite's leak check).
    @Test(arguments: 0..<modes.count)
    func theFrontendRefusesAHostileBackend(mode: Int) throws {
        let (name, target, text) = Self.modes[mode]
        let fake = try ScriptedBackend(target: target) { c, m in
            switch name {
            case "stall": usleep(1_000_000)
            case "half":
                let b = VhostUserMessage.reply(to: m.request, payload: VhostUserU64.encode(1)).bytes
                _ = b.withUnsafeBytes { send(c.fd, $0.baseAddress, 6, 0) }
                usleep(1_000_000)
            case "oversized":
                var w = LEWriter()
                w.u32(m.request); w.u32(5); w.u32(1 << 20)
                _ = w.out.withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, 0) }
            case "wrong code": try? c.send(.reply(to: 2, payload: VhostUserU64.encode(0)))
            case "fd":
                let e = cshim_eventfd(0, 1)
                var r = VhostUserMessage.reply(to: m.request, payload: [])
                r.fds = [e]
                try? c.send(r)
                close(e)
            case "bad flags": try? c.send(VhostUserMessage(request: m.request, flags: 1, payload: VhostUserU64.encode(0)))
            case "disconnect": c.close()
            case "nack": try? c.send(.reply(to: m.request, payload: VhostUserU64.encode(1)))
            default:
                try? c.send(.reply(to: m.request, payload: VhostUserU64.encode(0)))
                c.close()
            }
        }
        defer { fake.finish() }
        var o = VhostUserFrontendOptions(path: fake.path)
        o.timeoutMilliseconds = 300
        o.dmaBytes = 1 << 20
        let start = Date()
        do {
            _ = try VhostUserFrontend(o)
            Issue.record("\(name): the frontend accepted a hostile backend")
        } catch {
            #expect(text.split(separator: "|").contains { "\(error)".contains($0) }, "\(name): \(error)")
            #expect("\(error)".contains("vhost-user:"), "\(name): \(error)")
        }
        #expect(Date().timeIntervalSince(start) < 1.5, "\(name)")
    }
}
