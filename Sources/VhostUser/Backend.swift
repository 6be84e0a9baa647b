import HostIO
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// Serves one `VhostUserHostedDevice` on a UNIX socket, one frontend at a time (QEMU
/// docs/interop/vhost-user.rst, backend side). Each message is checked before it touches the
/// device: a request it refuses gets a failure ack (with REPLY_ACK) and a warning, and the
/// connection goes on; one that cannot be framed, or a GET_* it cannot answer, ends the
/// connection. When a frontend leaves, the device is reset, its memory unmapped and its
/// eventfds closed, and the next frontend is served. Kicks are served on this thread; with a
/// device poller (`softdev serve --poll`) the kick eventfds are drained and the device polls.
public final class VhostUserBackend<D: VhostUserHostedDevice>: @unchecked Sendable {
    public let path: String
    public let device: D
    let listenFD: Int32
    public private(set) var clientsServed = 0
    /// Connections that have ended (a `--clients N` stop counts these, never the one being served).
    public private(set) var clientsFinished = 0
    /// The bound on the rest of a message once its first byte is in, and on a reply the frontend
    /// will not take. Idle time between messages is not bounded (a running frontend sends nothing).
    public var timeoutMilliseconds = 5_000
    /// The device polls its rings itself: kicks are drained, not served.
    public var devicePolls = false
    /// What happened (one line per event), and what a frontend did wrong.
    public var log: (String) -> Void = { _ in }
    public var warn: (String) -> Void = { _ in }
    /// Called when a frontend has left (after the device reset): for a per-client report.
    public var clientLeft: (Int) -> Void = { _ in }

    public init(path: String, device: D) throws(VhostUserError) {
        self.path = path
        self.device = device
        do { listenFD = try listenUnix(path: path) } catch { throw VhostUserError(error) }
    }

    deinit {
        close(listenFD)
        unlink(path)
    }

    /// Accepts and serves frontends until `stop()` returns true (checked at least every 500 ms).
    public func run(until stop: () -> Bool) {
        acceptOneAtATime(listenFD, until: stop) { c in
            serve(VhostUserChannel(fd: c, peer: "frontend \(clientsServed + 1)"), stop: stop)
        }
    }

    /// Serves one connection to its end.
    public func serve(_ channel: VhostUserChannel, stop: () -> Bool = { false }) {
        clientsServed += 1
        let n = clientsServed
        log("frontend \(n) connected")
        channel.sendTimeoutMilliseconds = timeoutMilliseconds
        let session = BackendSession(device: device, peer: channel.peer)
        defer {
            session.tearDown()
            channel.close()
            clientsFinished += 1
            log("frontend \(n) left; device reset, memory unmapped, eventfds closed")
            clientLeft(n)
        }
        let bound = UInt64(min(max(timeoutMilliseconds, 1), 86_400_000)) * 1_000_000
        // The poll set (the socket, then each running ring's kick) is rebuilt only when a ring
        // changes, so serving kicks allocates nothing.
        var kicks: [(queue: Int, fd: Int32)] = []
        var fds: [pollfd] = []
        while !stop() {
            if session.pollSetChanged {
                session.pollSetChanged = false
                kicks = session.kickFDs
                fds = [pollfd(fd: channel.fd, events: Int16(POLLIN), revents: 0)]
                fds += kicks.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            }
            for i in fds.indices { fds[i].revents = 0 }
            let ready = poll(&fds, nfds_t(fds.count), 500)
            if ready <= 0 { continue }  // idle, or EINTR (a stop signal): check stop
            // By index: `enumerated()` over the tuples allocated per iteration in debug builds.
            for i in kicks.indices where fds[i + 1].revents & Int16(POLLIN) != 0 {
                let k = kicks[i]
                var count: UInt64 = 0
                _ = read(k.fd, &count, 8)
                if !devicePolls { device.hostKick(k.queue) }
            }
            guard fds[0].revents != 0 else { continue }
            let m: VhostUserMessage
            do { m = try channel.receive(deadline: monotonicNanoseconds() + bound) } catch {
                switch error {
                case .disconnected: break
                default: warn("frontend \(n): \(error); connection dropped")
                }
                return
            }
            let outcome = session.handle(m)
            if let why = outcome.refusal { warn("frontend \(n): refused \(m.name): \(why)") }
            if let reply = outcome.reply {
                do { try channel.send(reply) } catch {
                    warn("frontend \(n): \(error); connection dropped")
                    return
                }
            }
            if outcome.endConnection {
                warn("frontend \(n): connection ended (the request could not be answered)")
                return
            }
        }
    }
}
