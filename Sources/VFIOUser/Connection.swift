import CShim
import SystemPackage
import HostIO
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// Why a vfio-user exchange failed.
public enum VFIOUserError: Error, Sendable, Equatable, CustomStringConvertible {
    case io(String)
    /// The peer closed the connection (or died).
    case disconnected(String)
    /// A message that cannot be framed or does not follow the protocol.
    case protocolError(String)
    /// The peer answered with an error reply (its errno).
    case remote(command: UInt16, errno: UInt32)
    /// The peer did not answer (or finish a message, or take one) before the deadline.
    case timedOut(String)

    public var description: String {
        switch self {
        case let .io(why): why
        case let .disconnected(why): why
        case let .timedOut(why): why
        case let .protocolError(why): "vfio-user protocol error: \(why)"
        case let .remote(c, e):
            "vfio-user \(VFIOUserCommand(rawValue: c).map(\.specName) ?? "command \(c)") failed on the server: \(e <= 4095 ? String(cString: strerror(Int32(e))) : "not an errno") (errno \(e))"
        }
    }
}

extension VFIOUserError {
    /// The socket layer's error, in this protocol's terms.
    init(_ e: SocketError) {
        switch e {
        case let .io(why): self = .io(why)
        case let .disconnected(why): self = .disconnected(why)
        case let .protocolError(why): self = .protocolError(why)
        case let .timedOut(why): self = .timedOut(why)
        }
    }
}

/// One end of a vfio-user UNIX stream socket: framed messages with file descriptors.
public final class VFIOUserConnection: @unchecked Sendable {
    let socket: FramedSocket
    /// The socket; this connection owns it and closes it once.
    public var descriptor: FileDescriptor { socket.descriptor }
    public var peer: String { socket.peer }
    /// The raw socket number, for the C helpers and poll(2).
    @inlinable public var fd: Int32 { descriptor.rawValue }

    public init(fd: Int32, peer: String) {
        socket = FramedSocket(fd: fd, peer: peer)
    }

    public func close() { socket.close() }

    /// Connects to a server's socket. A server whose listen backlog stays full (it serves one
    /// client at a time, and may be stuck) makes connect wait: at most `timeoutMilliseconds`.
    public static func connect(path: String, timeoutMilliseconds: Int? = nil) throws(VFIOUserError) -> VFIOUserConnection {
        do {
            let s = try connectUnix(path: path, timeoutMilliseconds: timeoutMilliseconds, what: "vfio-user server",
                                    hint: "is `virtioctl softdev serve --socket \(path)` running?")
            return VFIOUserConnection(fd: s, peer: "vfio-user:\(path)")
        } catch { throw VFIOUserError(error) }
    }

    /// How long a message may take to go out once sending starts (a peer that stops reading
    /// fills the socket buffer); nil waits for ever.
    public var sendTimeoutMilliseconds: Int? {
        get { socket.sendTimeoutMilliseconds }
        set { socket.sendTimeoutMilliseconds = newValue }
    }

    /// Sends one message with its descriptors.
    public func send(_ m: VFIOUserMessage) throws(VFIOUserError) {
        do { try socket.send(m.bytes, fds: m.fds, what: "message \(m.header.messageID)") } catch { throw VFIOUserError(error) }
    }

    /// Receives one whole message; descriptors that came with it are the caller's to close.
    /// With a `deadline` (CLOCK_MONOTONIC ns) the whole message, its first byte included, must
    /// have arrived by then, else `.timedOut` (a silent peer, or one that stalls mid-message).
    public func receive(maxSize: Int = VFIOUserConst.maxMessage, deadline: UInt64? = nil) throws(VFIOUserError) -> VFIOUserMessage {
        do {
            let m = try socket.receive(headerLength: VFIOUserHeader.length, deadline: deadline) { (head: [UInt8]) throws(SocketError) -> Int in
                try head.withUnsafeBytes { h in Result { () throws(SocketError) in try Self.bodyLength(of: h, maxSize: maxSize) } }.get()
            }
            return VFIOUserMessage(header: VFIOUserHeader(decoding: m.header), payload: m.body, fds: m.fds)
        } catch { throw VFIOUserError(error) }
    }

    /// The same into `buffer` (its size is the bound on a message), descriptors appended to `fds`:
    /// returns the message's length. Allocates nothing unless descriptors come (a server's hot path).
    public func receive(into buffer: UnsafeMutableRawBufferPointer, fds: inout [Int32], deadline: UInt64?) throws(VFIOUserError) -> Int {
        do {
            return try socket.receive(into: buffer, headerLength: VFIOUserHeader.length, deadline: deadline, fds: &fds) { (head) throws(SocketError) in
                try Self.bodyLength(of: head, maxSize: buffer.count)
            }
        } catch { throw VFIOUserError(error) }
    }

    /// A message's body length from its header's msg_size, which covers the header and is bounded.
    private static func bodyLength(of head: UnsafeRawBufferPointer, maxSize: Int) throws(SocketError) -> Int {
        let size = VFIOUserHeader(decoding: head).size
        guard size >= UInt32(VFIOUserHeader.length), size <= UInt32(maxSize) else {
            throw .protocolError("message size \(size) is outside 16...\(maxSize)")
        }
        return Int(size) - VFIOUserHeader.length
    }

    /// Sends caller-owned bytes (a reply built on the stack).
    func send(raw b: UnsafeRawBufferPointer, id: UInt16) throws(VFIOUserError) {
        do { try socket.send(raw: b, what: "message \(id)") } catch { throw VFIOUserError(error) }
    }
}
