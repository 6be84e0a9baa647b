import CShim
import SystemPackage
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// Why a socket exchange failed (each protocol maps it onto its own error type).
public enum SocketError: Error, Sendable, Equatable, CustomStringConvertible {
    case io(String)
    /// The peer closed the connection (or died).
    case disconnected(String)
    /// Bytes that cannot be framed: a size out of bounds, too many descriptors.
    case protocolError(String)
    /// The peer did not answer (or finish a message, or take one) before the deadline.
    case timedOut(String)

    public var description: String {
        switch self {
        case let .io(why), let .disconnected(why), let .protocolError(why), let .timedOut(why): why
        }
    }
}

/// A UNIX socket address for `path` (which must fit sun_path).
public func unixAddress(_ path: String) throws(SocketError) -> sockaddr_un {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        throw .io("socket path \(path) is longer than \(MemoryLayout.size(ofValue: addr.sun_path) - 1) bytes")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { for (i, b) in bytes.enumerated() { $0[i] = b } }
    return addr
}

/// A listening UNIX stream socket at `path` (an old socket file there is replaced). Returns its fd.
public func listenUnix(path: String, backlog: Int32 = 4) throws(SocketError) -> Int32 {
    var addr = try unixAddress(path)
    unlink(path)
    let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard s >= 0 else { throw .io("socket: \(String(cString: strerror(errno)))") }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0, listen(s, backlog) == 0 else {
        let e = errno
        close(s)
        throw .io("cannot listen on \(path): \(String(cString: strerror(e)))")
    }
    return s
}

/// Serves a listening socket's connections one at a time: each accepted socket (close-on-exec) goes
/// to `serve`, which owns it, until `stop()` returns true (checked at least every `pollMilliseconds`).
public func acceptOneAtATime(_ listenFD: Int32, pollMilliseconds: Int32 = 500, until stop: () -> Bool, serve: (Int32) -> Void) {
    while !stop() {
        var p = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, pollMilliseconds) == 1 else { continue }
        let c = accept(listenFD, nil, nil)
        guard c >= 0 else { continue }
        _ = fcntl(c, F_SETFD, FD_CLOEXEC)
        serve(c)
    }
}

/// Connects to `path`. A server whose listen backlog stays full (it serves one client at a time,
/// and may be stuck) makes connect wait: at most `timeoutMilliseconds`, then `.timedOut`.
/// `what` names the peer in errors ("vfio-user server"), `hint` says what to start when nobody listens.
public func connectUnix(path: String, timeoutMilliseconds: Int?, what: String, hint: String) throws(SocketError) -> Int32 {
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
            throw .timedOut("\(path): the \(what) took no new connection within \(ms) ms (its backlog is full: it serves one client at a time)")
        }
        throw .io("cannot connect to \(what) \(path): \(String(cString: strerror(e)))"
            + (e == ENOENT || e == ECONNREFUSED ? " (\(hint))" : ""))
    }
    return s
}

/// One end of a UNIX stream socket carrying framed messages with file descriptors (SCM_RIGHTS,
/// sent with the message's first byte). It owns the socket and closes it once.
public final class FramedSocket: @unchecked Sendable {
    public let descriptor: FileDescriptor
    /// How errors name the other side: `vfio-user:/tmp/blk.sock`, `client 3`.
    public let peer: String
    private var closed = false
    /// The raw socket number, for the C helpers and poll(2).
    @inlinable public var fd: Int32 { descriptor.rawValue }
    /// How long a message may take to go out once sending starts (a peer that stops reading
    /// fills the socket buffer); nil waits for ever.
    public var sendTimeoutMilliseconds: Int?

    public init(fd: Int32, peer: String) {
        descriptor = FileDescriptor(rawValue: fd)
        self.peer = peer
    }

    deinit { close() }

    public func close() {
        if !closed { try? descriptor.close(); closed = true }
    }

    /// Sends `bytes` with `fds` in one sendmsg; `what` names the message in a timeout error.
    public func send(_ bytes: [UInt8], fds: [Int32], what: @autoclosure () -> String) throws(SocketError) {
        let timeout = Int32(clamping: sendTimeoutMilliseconds ?? -1)
        let rc = bytes.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in cshim_send_with_fds(fd, b.baseAddress, b.count, f.baseAddress, Int32(f.count), timeout) }
        }
        try checkSent(rc, of: bytes.count, what: what())
    }

    /// The same from caller-owned memory and no descriptors: a message built on the stack (a posted
    /// doorbell) goes out without a heap allocation; `what` is only formatted for an error.
    public func send(raw b: UnsafeRawBufferPointer, what: @autoclosure () -> String) throws(SocketError) {
        let rc = cshim_send_with_fds(fd, b.baseAddress, b.count, nil, 0, Int32(clamping: sendTimeoutMilliseconds ?? -1))
        try checkSent(rc, of: b.count, what: what())
    }

    private func checkSent(_ rc: Int, of count: Int, what: @autoclosure () -> String) throws(SocketError) {
        if rc == -Int(EPIPE) || rc == -Int(ECONNRESET) { throw .disconnected("\(peer): the peer closed the connection") }
        if rc == -Int(ETIMEDOUT) {
            throw .timedOut("\(peer): the peer took no data for \(sendTimeoutMilliseconds ?? 0) ms (\(what()) not sent whole)")
        }
        guard rc == count else { throw .io("\(peer): send: \(String(cString: strerror(Int32(-rc))))") }
    }

    /// Receives one message: a `headerLength`-byte header (descriptors come with it), then as many
    /// body bytes as `bodyLength` reads off the header (it throws for a size out of bounds).
    /// Descriptors are the caller's to close. With a `deadline` (CLOCK_MONOTONIC ns) the whole
    /// message, its first byte included, must arrive by then, else `.timedOut`.
    public func receive(headerLength: Int, deadline: UInt64?,
                        bodyLength: ([UInt8]) throws(SocketError) -> Int) throws(SocketError) -> (header: [UInt8], body: [UInt8], fds: [Int32]) {
        var head = [UInt8](repeating: 0, count: headerLength)
        var all: [Int32] = []
        let length: Result<Int, SocketError> = head.withUnsafeMutableBytes { h in
            Result { () throws(SocketError) in try readHeader(into: h.baseAddress!, count: headerLength, deadline: deadline, fds: &all) }
        }.flatMap { Result { () throws(SocketError) in try bodyLength(head) } }
        var body = [UInt8](repeating: 0, count: (try? length.get()) ?? 0)
        let read: Result<Void, SocketError> = length.flatMap { n in
            body.withUnsafeMutableBytes { b in
                Result { () throws(SocketError) in try readBody(into: b.baseAddress, count: n, deadline: deadline, headerLength: headerLength) }
            }
        }
        if case let .failure(e) = read {
            for x in all { Glibc.close(x) }
            throw e
        }
        return (head, body, all)
    }

    /// The same into caller-owned memory (a per-connection buffer): returns the message's length,
    /// header included, and appends the descriptors to `fds` (empty when none came: no allocation).
    /// A message longer than `buffer` is a protocol error; on any error the descriptors are closed.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, headerLength: Int, deadline: UInt64?, fds: inout [Int32],
                        bodyLength: (UnsafeRawBufferPointer) throws(SocketError) -> Int) throws(SocketError) -> Int {
        precondition(buffer.count >= headerLength, "a receive buffer holds at least the header")
        let base = buffer.baseAddress!
        do throws(SocketError) {
            try readHeader(into: base, count: headerLength, deadline: deadline, fds: &fds)
            let length = try bodyLength(UnsafeRawBufferPointer(start: base, count: headerLength))
            guard length >= 0, length <= buffer.count - headerLength else {
                throw .protocolError("\(peer): a \(headerLength + length)-byte message is longer than the \(buffer.count) bytes allowed")
            }
            try readBody(into: base + headerLength, count: length, deadline: deadline, headerLength: headerLength)
            return headerLength + length
        } catch {
            for x in fds { Glibc.close(x) }
            fds.removeAll(keepingCapacity: true)
            throw error
        }
    }

    /// Reads a whole header, taking the descriptors that come with it (appended to `all`).
    private func readHeader(into p: UnsafeMutableRawPointer, count: Int, deadline: UInt64?, fds all: inout [Int32]) throws(SocketError) {
        var got = 0
        var nfds: Int32 = 0
        try withUnsafeTemporaryAllocation(of: Int32.self, capacity: Int(CSHIM_MAX_FDS)) { (fds) throws(SocketError) in
            while got < count {
                try waitReadable(until: deadline, got: got, headerLength: count, of: count)
                let n = cshim_recv_with_fds(fd, p + got, count - got, fds.baseAddress, CSHIM_MAX_FDS, &nfds)
                if n == -Int(EAGAIN) { continue }
                if n == 0 { throw .disconnected("\(peer): the peer closed the connection") }
                guard n > 0 else {
                    if n == -Int(ECONNRESET) { throw .disconnected("\(peer): connection reset") }
                    if n == -Int(EMSGSIZE) { throw .protocolError("\(peer): more than \(CSHIM_MAX_FDS) file descriptors on one message") }
                    throw .io("\(peer): receive: \(String(cString: strerror(Int32(-n))))")
                }
                for i in 0..<Int(nfds) { all.append(fds[i]) }
                got += n
            }
        }
    }

    /// Reads a body of `count` bytes that follows a `headerLength`-byte header.
    private func readBody(into p: UnsafeMutableRawPointer?, count: Int, deadline: UInt64?, headerLength: Int) throws(SocketError) {
        var done = 0
        while done < count {
            try waitReadable(until: deadline, got: headerLength + done, headerLength: headerLength, of: headerLength + count)
            // Without a deadline the read blocks (waitReadable returned at once); with one, poll waited.
            let n = recv(fd, p! + done, count - done, deadline == nil ? 0 : Int32(MSG_DONTWAIT))
            if n < 0, errno == EAGAIN || errno == EINTR { continue }
            guard n > 0 else { throw .disconnected("\(peer): the peer closed the connection mid-message") }
            done += n
        }
    }

    /// True when the peer has closed its end (EOF readable now, nothing else pending): a peer
    /// that acknowledged a request and then hung up.
    public var peerHasClosed: Bool {
        let rdhup: Int16 = 0x2000  // POLLRDHUP (a GNU macro Swift's Glibc does not import)
        var p = pollfd(fd: fd, events: Int16(POLLIN) | rdhup, revents: 0)
        guard poll(&p, 1, 0) > 0 else { return false }
        if p.revents & (rdhup | Int16(POLLHUP)) != 0 {
            var byte: UInt8 = 0
            return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0
        }
        return false
    }

    /// Waits until the socket has bytes (or EOF) to read, or the deadline passes.
    func waitReadable(until deadline: UInt64?, got: Int, headerLength: Int, of expected: Int) throws(SocketError) {
        guard let deadline else { return }  // no bound: the blocking read waits
        while true {
            let now = monotonicNanoseconds()
            guard now < deadline else {
                // Past the deadline: what already arrived still counts (one look, no waiting).
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 0) > 0 { return }
                throw .timedOut(got == 0 ? "\(peer): nothing arrived before the deadline"
                    : got < headerLength ? "\(peer): the peer stalled after \(got) bytes of a \(headerLength)-byte message header"
                    : "\(peer): the peer stalled after \(got) of the message's \(expected) bytes")
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&p, 1, Int32(clamping: (deadline - now + 999_999) / 1_000_000))
            if rc > 0 { return }
            if rc < 0, errno != EINTR { throw .io("\(peer): poll: \(String(cString: strerror(errno)))") }
        }
    }
}
