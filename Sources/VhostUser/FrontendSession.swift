import Synchronization
import VirtioCore
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// The request/reply half of a vhost-user frontend: one request at a time, each reply awaited
/// within the bound, REPLY_ACK used on every SET_* when negotiated, and a backend that acks and
/// then hangs up (qemu-storage-daemon after a request it could not take) caught at once.
final class FrontendSession: @unchecked Sendable {
    let channel: VhostUserChannel
    let timeoutMilliseconds: Int
    /// Held across each request and its reply.
    let lock = Mutex<Void>(())
    /// VHOST_USER_PROTOCOL_F_REPLY_ACK was negotiated.
    var replyAck = false
    /// The first failure that ended the connection: every later request fails with it.
    private(set) var broken: VhostUserError?

    init(channel: VhostUserChannel, timeoutMilliseconds: Int) {
        self.channel = channel
        self.timeoutMilliseconds = timeoutMilliseconds
        channel.sendTimeoutMilliseconds = timeoutMilliseconds
    }

    private var deadline: UInt64 { monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000 }

    /// Sends a request that has a reply of its own (GET_*) and returns the reply's payload.
    /// NEED_REPLY is never set here: qemu-storage-daemon would answer with flags 0xd.
    func get(_ request: VhostUserRequest, payload: [UInt8] = []) throws(VhostUserError) -> [UInt8] {
        try lock.withLock { _ throws(VhostUserError) -> [UInt8] in
            try usable()
            do throws(VhostUserError) {
                try channel.send(VhostUserMessage(request, payload: payload))
                return try awaitReply(to: request)
            } catch { throw fail(error) }
        }
    }

    /// A GET_* whose reply is one u64.
    func getU64(_ request: VhostUserRequest) throws(VhostUserError) -> UInt64 {
        let reply = try get(request)
        return try decode { () throws(VhostUserDecodeError) in try VhostUserU64.decode(reply, "\(request.specName) reply") }
    }

    /// Sends a request without a reply of its own; with REPLY_ACK it waits for the ack and
    /// throws `.refused` on a non-zero one. `ack: false` sends it bare even then.
    func set(_ request: VhostUserRequest, payload: [UInt8] = [], fds: [Int32] = [], ack: Bool = true) throws(VhostUserError) {
        try lock.withLock { _ throws(VhostUserError) in
            try usable()
            let wantAck = ack && replyAck
            do throws(VhostUserError) {
                try channel.send(VhostUserMessage(request, needReply: wantAck, payload: payload, fds: fds))
                guard wantAck else { return }
                let reply = try awaitReply(to: request)
                let code: UInt64
                do { code = try VhostUserU64.decode(reply, "\(request.specName) ack") } catch {
                    throw VhostUserError.protocolError("\(channel.peer): \(error)")
                }
                guard code == 0 else {
                    throw VhostUserError.refused("\(channel.peer): the backend refused \(request.specName) (ack \(code))")
                }
                // qemu-storage-daemon acks 0 for a request that made it give up, then closes the socket.
                if channel.peerHasClosed {
                    throw VhostUserError.disconnected("\(channel.peer): the backend acknowledged \(request.specName) and then closed the connection")
                }
            } catch { throw fail(error) }
        }
    }

    /// Reads the reply to `request`: flags must carry version 1 and REPLY, the code must match,
    /// and no descriptor belongs on it.
    private func awaitReply(to request: VhostUserRequest) throws(VhostUserError) -> [UInt8] {
        let m: VhostUserMessage
        do { m = try channel.receive(deadline: deadline) } catch {
            if case let .timedOut(why) = error {
                throw VhostUserError.timedOut("\(why) (awaiting the reply to \(request.specName) for \(timeoutMilliseconds) ms)")
            }
            throw error
        }
        if !m.fds.isEmpty {
            closeAll(m.fds)
            throw VhostUserError.protocolError("\(channel.peer): the reply to \(request.specName) carried \(m.fds.count) file descriptor(s); none belongs there")
        }
        guard m.versionOK, m.isReply else {
            throw VhostUserError.protocolError("\(channel.peer): the reply to \(request.specName) has flags 0x\(String(m.flags, radix: 16)) (version 1 and REPLY expected)")
        }
        guard m.request == request.rawValue else {
            throw VhostUserError.protocolError("\(channel.peer): the reply to \(request.specName) came back as \(m.name)")
        }
        return m.payload
    }

    /// Decodes a reply; a malformed one breaks the connection like any protocol error.
    func decode<R>(_ body: () throws(VhostUserDecodeError) -> R) throws(VhostUserError) -> R {
        do { return try body() } catch {
            let e = VhostUserError.protocolError("\(channel.peer): \(error)")
            lock.withLock { _ in _ = fail(e) }
            throw e
        }
    }

    private func usable() throws(VhostUserError) {
        if let broken { throw broken }
    }

    /// A connection that failed stays failed: the backend's state is unknown from here on.
    private func fail(_ e: VhostUserError) -> VhostUserError {
        if case .refused = e { return e }  // the backend said no and kept the connection (DPDK)
        if broken == nil { broken = e }
        channel.close()
        return e
    }

    /// The connection failed, or the backend hung up (checked without waiting).
    var peerGone: Bool {
        lock.withLock { _ in broken != nil || channel.peerHasClosed }
    }

    func close() {
        lock.withLock { _ in
            if broken == nil { broken = .disconnected("\(channel.peer): the frontend closed the connection") }
            channel.close()
        }
    }
}
