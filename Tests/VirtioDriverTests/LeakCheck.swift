import Foundation
import Testing
import VirtioRing

/// What a test could leave behind: DMA arenas, shared-memory and VFIO mappings, eventfds,
/// memfds, VFIO fds, sockets, statistics regions, and the threads this project starts.
struct ProcessResources: Equatable, CustomStringConvertible {
    var counts: [String: Int] = [:]

    static func snapshot() -> ProcessResources {
        var r = ProcessResources()
        r.counts["DMA arenas"] = DMAArena.live.load(ordering: .relaxed)
        let fm = FileManager.default
        for fd in (try? fm.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            guard let target = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { continue }
            let kind: String? = switch true {
            case target.contains("[eventfd]"): "eventfds"
            case target.contains("[timerfd]"): "timerfds"
            case target.hasPrefix("/memfd:"): "memfds"
            case target.hasPrefix("/dev/vfio"), target.contains("[vfio-device]"): "VFIO fds"
            case target.hasPrefix("socket:"): "sockets"
            case target.hasPrefix("/dev/shm/"): "statistics region fds"
            default: nil
            }
            if let kind { r.counts[kind, default: 0] += 1 }
        }
        // Foundation gives each thread that waits on a child process a run loop: one eventfd, one
        // timerfd and one epoll fd, kept until the thread ends (Swift Testing's threads live on).
        // This project makes no timerfds, so each timerfd stands for a run loop's eventfd.
        r.counts["eventfds"] = r.counts["eventfds", default: 0] - (r.counts.removeValue(forKey: "timerfds") ?? 0)
        let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        for line in maps.split(separator: "\n") {
            if line.contains("/memfd:") { r.counts["shared-memory mappings", default: 0] += 1 }
            if line.contains("/dev/vfio") || line.contains("vfio-device") { r.counts["VFIO region mappings", default: 0] += 1 }
            if line.contains("/dev/shm/") { r.counts["statistics region mappings", default: 0] += 1 }
        }
        // Threads this project names (device pollers, vfio-user servers).
        for task in (try? fm.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
            let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            if comm.hasPrefix("virtio-") || comm.hasPrefix("vfio-user") { r.counts["project threads", default: 0] += 1 }
        }
        return r
    }

    /// What `self` has more of than `before`.
    func excess(over before: ProcessResources) -> [String: Int] {
        var out: [String: Int] = [:]
        for (k, v) in counts where v > before.counts[k, default: 0] { out[k] = v - before.counts[k, default: 0] }
        return out
    }

    var description: String { counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") }
}

/// `VIRTIO_LEAK_CHECK=1 swift test --no-parallel`: after every test, nothing it made is left
/// (tests run one at a time then, so process-wide counts belong to the test that just ran).
/// Without the variable the trait does nothing (parallel tests would see each other's resources).
struct LeakCheck: TestTrait, SuiteTrait, TestScoping {
    var isRecursive: Bool { true }
    static let enabled = ProcessInfo.processInfo.environment["VIRTIO_LEAK_CHECK"] == "1"

    /// Foundation makes its child-process machinery (a socket pair, eventfds for its event loop)
    /// on first use and keeps it: made once here, before any count, so it is not charged to a test.
    static let warmUp: Void = {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        p.standardOutput = Pipe()
        p.standardError = Pipe()
        try? p.run()
        p.waitUntilExit()
    }()

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard Self.enabled, testCase != nil else { return try await function() }
        _ = Self.warmUp
        let before = ProcessResources.snapshot()
        // A test that throws is checked too (its error is rethrown after).
        var thrown: (any Error)?
        do { try await function() } catch { thrown = error }
        // Threads and fds closed by a deinit on another thread settle within moments.
        var left = ProcessResources.snapshot().excess(over: before)
        var waited = 0
        while !left.isEmpty && waited < 30 {
            usleep(100_000)
            waited += 1
            left = ProcessResources.snapshot().excess(over: before)
        }
        if !left.isEmpty {
            Issue.record("\(test.name) left behind: \(left.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))")
        }
        if let thrown { throw thrown }
    }
}

extension Trait where Self == LeakCheck {
    /// Checks that each test leaves no DMA mapping, fd, eventfd or thread behind (see `LeakCheck`).
    static var leakChecked: Self { LeakCheck() }
}
