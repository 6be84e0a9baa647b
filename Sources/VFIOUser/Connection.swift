import CShim
import SystemPackage
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

/// A UNIX socket address for `path` (which must fit sun_path).
func unixAddress(_ path: String) throws(VFIOUserError) -> sockaddr_un {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        throw .io("socket path \(path) is longer than \(MemoryLayout.size(ofValue: addr.sun_path) - 1) bytes")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { for (i, b) in bytes.enumerated() { $0[i] = b } }
    return addr
}

/// One end of a vfio-user UNIX stream socket: framed messages with file descriptors.
public final class VFIOUserConnection: @unchecked Sendable {
    /// The socket; this connection owns it and closes it once.
    public let descriptor: FileDescriptor
    public let peer: String
    private var closed = false
    /// The raw socket number, for the C helpers and poll(2).
    @inlinable public var fd: Int32 { descriptor.rawValue }

    public init(fd: Int32, peer: String) {
        descriptor = FileDescriptor(rawValue: fd)
        self.peer = peer
    }

    deinit { close() }

    public func close() {
        if !closed { try? descriptor.close(); closed = true }
    }

    /// Connects to a server's socket. A server whose listen backlog stays full (it serves one
    /// client at a time, and may be stuck) makes connect wait: at most `timeoutMilliseconds`.
    public static func connect(path: String, timeoutMilliseconds: Int? = nil) throws(VFIOUserError) -> VFIOUserConnection {
        var addr = try unixAddress(path)
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw .io("socket: \(String(cString: strerror(errno)))") }
        // Linux bounds a blocking AF_UNIX connect by SO_SNDTIMEO (EAGAIN when it runs out).
        if let ms = timeoutMilliseconds {
            var tv = timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
            _ = setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(s)
            if e == EAGAIN, let ms = timeoutMilliseconds {
                throw .timedOut("vfio-user:\(path): the server took no new connection within \(ms) ms (its backlog is full: it serves one client at a time)")
            }
            throw .io("cannot connect to vfio-user server \(path): \(String(cString: strerror(e)))"
                + (e == ENOENT || e == ECONNREFUSED ? " (is `virtioctl softdev serve --socket \(path)` running?)" : ""))
        }
        return VFIOUserConnection(fd: s, peer: "vfio-user:\(path)")
    }

    /// How long a message may take to go out once sending starts (a peer that stops reading
    /// fills the socket buffer); nil waits for ever.
    public var sendTimeoutMilliseconds: Int?

    /// Sends one message with its descriptors.
    public func send(_ m: VFIOUserMessage) throws(VFIOUserError) {
        let bytes = m.bytes
        let timeout = Int32(clamping: sendTimeoutMilliseconds ?? -1)
        let rc = bytes.withUnsafeBytes { b in
            m.fds.withUnsafeBufferPointer { f in cshim_send_with_fds(fd, b.baseAddress, b.count, f.baseAddress, Int32(f.count), timeout) }
        }
        if rc == -Int(EPIPE) || rc == -Int(ECONNRESET) { throw .disconnected("\(peer): the peer closed the connection") }
        if rc == -Int(ETIMEDOUT) {
            throw .timedOut("\(peer): the peer took no data for \(sendTimeoutMilliseconds ?? 0) ms (message \(m.header.messageID) not sent whole)")
        }
        guard rc == bytes.count else { throw .io("\(peer): send: \(String(cString: strerror(Int32(-rc))))") }
    }

    /// Receives one whole message; descriptors that came with it are the caller's to close.
    /// With a `deadline` (CLOCK_MONOTONIC ns) the whole message, its first byte included, must
    /// have arrived by then, else `.timedOut` (a silent peer, or one that stalls mid-message).
    public func receive(maxSize: Int = VFIOUserConst.maxMessage, deadline: UInt64? = nil) throws(VFIOUserError) -> VFIOUserMessage {
        var head = [UInt8](repeating: 0, count: VFIOUserHeader.length)
        var fds = [Int32](repeating: -1, count: Int(CSHIM_MAX_FDS))
        var got = 0
        var nfds: Int32 = 0
        var all: [Int32] = []
        func fail(_ e: VFIOUserError) -> VFIOUserError {
            for x in all { Glibc.close(x) }
            return e
        }
        while got < head.count {
            do { try waitReadable(until: deadline, got: got, of: head.count) } catch { throw fail(error) }
            let n = head.withUnsafeMutableBytes { h in
                fds.withUnsafeMutableBufferPointer { f in
                    cshim_recv_with_fds(fd, h.baseAddress! + got, h.count - got, f.baseAddress, CSHIM_MAX_FDS, &nfds)
                }
            }
            if n == -Int(EAGAIN) { continue }
            if n == 0 { throw fail(.disconnected("\(peer): the peer closed the connection")) }
            guard n > 0 else {
                if n == -Int(ECONNRESET) { throw fail(.disconnected("\(peer): connection reset")) }
                throw fail(.io("\(peer): receive: \(String(cString: strerror(Int32(-n))))"))
            }
            all += fds.prefix(Int(nfds))
            got += n
        }
        let header = VFIOUserHeader(decoding: head)
        guard header.size >= UInt32(VFIOUserHeader.length), header.size <= UInt32(maxSize) else {
            throw fail(.protocolError("message size \(header.size) is outside 16...\(maxSize)"))
        }
        var payload = [UInt8](repeating: 0, count: Int(header.size) - VFIOUserHeader.length)
        var done = 0
        while done < payload.count {
            do { try waitReadable(until: deadline, got: VFIOUserHeader.length + done, of: Int(header.size)) } catch { throw fail(error) }
            // Without a deadline the read blocks (waitReadable returned at once); with one, poll waited.
            let n = payload.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, $0.count - done, deadline == nil ? 0 : Int32(MSG_DONTWAIT)) }
            if n < 0, errno == EAGAIN || errno == EINTR { continue }
            guard n > 0 else { throw fail(.disconnected("\(peer): the peer closed the connection mid-message")) }
            done += n
        }
        return VFIOUserMessage(header: header, payload: payload, fds: all)
    }

    /// Waits until the socket has bytes (or EOF) to read, or the deadline passes.
    func waitReadable(until deadline: UInt64?, got: Int, of expected: Int) throws(VFIOUserError) {
        guard let deadline else { return }  // no bound: the blocking read waits
        while true {
            let now = monotonicNanoseconds()
            guard now < deadline else {
                // Past the deadline: what already arrived still counts (one look, no waiting).
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 0) > 0 { return }
                throw .timedOut(got == 0 ? "\(peer): nothing arrived before the deadline"
                    : got < VFIOUserHeader.length ? "\(peer): the peer stalled after \(got) bytes of a \(VFIOUserHeader.length)-byte message header"
                    : "\(peer): the peer stalled after \(got) of the message's \(expected) bytes")
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&p, 1, Int32(clamping: (deadline - now + 999_999) / 1_000_000))
            if rc > 0 { return }
            if rc < 0, errno != EINTR { throw .io("\(peer): poll: \(String(cString: strerror(errno)))") }
        }
    }
}
