#if canImport(Glibc)
import Glibc
#endif

/// The one monotonic clock of the project, in nanoseconds (system-wide on Linux, so comparable across processes).
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
}

/// The bound on a poll loop (DESIGN rule 4): the clock is read only every `stride` empty polls,
/// so a busy-poll stays cheap, and a periodic check (device health) runs at the same moments.
public struct PollDeadline {
    public let milliseconds: Int
    public let end: UInt64
    let stride: Int
    var spins = 0

    public init(milliseconds: Int, stride: Int = 1024) {
        self.milliseconds = milliseconds
        end = monotonicNanoseconds() &+ UInt64(max(milliseconds, 0)) &* 1_000_000
        self.stride = max(stride, 1)
    }

    /// Call after each poll that found nothing: every `stride` calls runs `check` and reports
    /// whether the deadline has passed. `afterSleep`: the caller slept, so check at once.
    @inline(__always)
    public mutating func expired<E: Error>(afterSleep: Bool = false, check: () throws(E) -> Void) throws(E) -> Bool {
        spins &+= 1
        guard afterSleep || spins % stride == 0 else { return false }
        try check()
        return monotonicNanoseconds() >= end
    }

    public mutating func expired(afterSleep: Bool = false) -> Bool {
        expired(afterSleep: afterSleep) { () throws(Never) in }
    }

    /// Polls `body` every `sleepMicroseconds` until it returns a value or `milliseconds` pass; nil then.
    public static func poll<T, E: Error>(milliseconds: Int, sleepMicroseconds: UInt32 = 100,
                                         _ body: () throws(E) -> T?) throws(E) -> T? {
        var deadline = PollDeadline(milliseconds: milliseconds, stride: 1)
        while true {
            if let v = try body() { return v }
            if deadline.expired() { return try body() }
            usleep(sleepMicroseconds)
        }
    }
}
