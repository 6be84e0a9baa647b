import CShim
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Eventfds owned together (one per interrupt vector): each is closed exactly once, by `close()`
/// or when the set goes away. Holders hand out the raw numbers (VFIO, SCM_RIGHTS, poll) but never close them.
public final class EventFDSet: Sendable {
    private let descriptors: Mutex<[FileDescriptor]>

    /// `count` new non-blocking eventfds, all or none (closed again on failure).
    public init(count: Int) throws(SocketError) {
        var fds: [FileDescriptor] = []
        for _ in 0..<count {
            let fd = cshim_eventfd(0, 1)
            guard fd >= 0 else {
                let e = errno
                for f in fds { try? f.close() }
                throw .io("eventfd: \(String(cString: strerror(e)))")
            }
            fds.append(FileDescriptor(rawValue: fd))
        }
        descriptors = Mutex(fds)
    }

    /// Takes ownership of descriptors received from elsewhere (a peer's eventfds over SCM_RIGHTS).
    public init(adopting fds: [Int32]) {
        descriptors = Mutex(fds.map { FileDescriptor(rawValue: $0) })
    }

    deinit { close() }

    /// The raw numbers, in vector order (empty once closed).
    public var raw: [Int32] { descriptors.withLock { $0.map(\.rawValue) } }
    public var count: Int { descriptors.withLock { $0.count } }

    /// The eventfd of `vector`, or nil past the end or once closed.
    public subscript(vector: Int) -> Int32? {
        descriptors.withLock { vector >= 0 && vector < $0.count ? $0[vector].rawValue : nil }
    }

    /// Closes every eventfd now; later calls do nothing.
    public func close() {
        let fds = descriptors.withLock { fds -> [FileDescriptor] in
            defer { fds = [] }
            return fds
        }
        for f in fds { try? f.close() }
    }
}

/// Why `fd` cannot serve as a peer's kick or call eventfd (nil: it can). A pipe or a file in its
/// place would block or spin whoever writes or polls it; a usable one is made non-blocking.
public func usableEventFD(_ fd: Int32) -> String? {
    var target = [CChar](repeating: 0, count: 64)
    let n = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
    let what = n > 0 ? String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown"
    guard what == "anon_inode:[eventfd]" else { return "the descriptor is not an eventfd (\(what))" }
    let flags = fcntl(fd, F_GETFL)
    guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { return "the eventfd cannot be made non-blocking" }
    return nil
}
