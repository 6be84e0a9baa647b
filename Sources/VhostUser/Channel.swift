import HostIO
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// Why a vhost-user exchange failed.
public enum VhostUserError: Error, Sendable, Equatable, CustomStringConvertible {
    case io(String)
    /// The peer closed the connection (or died).
    case disconnected(String)
    /// A message that cannot be framed or does not follow the protocol.
    case protocolError(String)
    /// The peer did not answer (or finish a message, or take one) before the deadline.
    case timedOut(String)
    /// The backend answered REPLY_ACK with a failure, or lacks something this side needs.
    case refused(String)

    public var description: String {
        switch self {
        case let .io(why), let .disconnected(why), let .timedOut(why), let .refused(why): why
        case let .protocolError(why): "vhost-user protocol error: \(why)"
        }
    }

    init(_ e: SocketError) {
        switch e {
        case let .io(why): self = .io(why)
        case let .disconnected(why): self = .disconnected(why)
        case let .protocolError(why): self = .protocolError(why)
        case let .timedOut(why): self = .timedOut(why)
        }
    }
}

/// One end of a vhost-user UNIX socket: the 12-byte header, the payload and its descriptors go
/// in one sendmsg (every implementation reads the descriptors with the header's bytes).
public final class VhostUserChannel: @unchecked Sendable {
    let socket: FramedSocket
    public var peer: String { socket.peer }
    public var fd: Int32 { socket.fd }

    public init(fd: Int32, peer: String) { socket = FramedSocket(fd: fd, peer: peer) }

    public static func connect(path: String, timeoutMilliseconds: Int?) throws(VhostUserError) -> VhostUserChannel {
        do {
            let s = try connectUnix(path: path, timeoutMilliseconds: timeoutMilliseconds, what: "vhost-user backend",
                                    hint: "is a backend (qemu-storage-daemon --export type=vhost-user-blk, or `virtioctl softdev serve --vhost-user \(path)`) listening?")
            return VhostUserChannel(fd: s, peer: "vhost-user:\(path)")
        } catch { throw VhostUserError(error) }
    }

    public func close() { socket.close() }

    public var sendTimeoutMilliseconds: Int? {
        get { socket.sendTimeoutMilliseconds }
        set { socket.sendTimeoutMilliseconds = newValue }
    }

    public var peerHasClosed: Bool { socket.peerHasClosed }

    public func send(_ m: VhostUserMessage) throws(VhostUserError) {
        do { try socket.send(m.bytes, fds: m.fds, what: m.name) } catch { throw VhostUserError(error) }
    }

    /// One whole message (descriptors are the caller's to close); the payload may be at most
    /// `VhostUserWire.maxPayload` bytes. With a `deadline` the whole message must be in by then.
    public func receive(deadline: UInt64?) throws(VhostUserError) -> VhostUserMessage {
        do {
            let m = try socket.receive(headerLength: VhostUserWire.headerLength, deadline: deadline) { (head: [UInt8]) throws(SocketError) -> Int in
                let size = VhostUserMessage.payloadSize(header: head)
                guard size <= VhostUserWire.maxPayload else {
                    throw .protocolError("a \(size)-byte payload is over the \(VhostUserWire.maxPayload)-byte limit")
                }
                return size
            }
            let r = LEReader(m.header)
            return VhostUserMessage(request: r.u32(0), flags: r.u32(4), payload: m.body, fds: m.fds)
        } catch { throw VhostUserError(error) }
    }
}

/// Closes descriptors that came with a message and were not taken.
func closeAll(_ fds: [Int32]) { for fd in fds { close(fd) } }
