import CShim
#if canImport(Glibc)
import Glibc
#endif

/// A POSIX thread pinned to one CPU, running `body` once.
final class PinnedThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void
    private let cpu: Int32

    init(cpu: Int32, _ body: @escaping @Sendable () -> Void) {
        self.body = body
        self.cpu = cpu
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<PinnedThread>.fromOpaque(arg!).takeRetainedValue()
            _ = cshim_pin_current_thread(me.cpu)
            me.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    func join() { pthread_join(thread, nil) }
}

/// Monotonic nanoseconds.
func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
