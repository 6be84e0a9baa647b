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
