import CShim
import Synchronization
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// A device thread that polls every request queue of a software function, as a poll-mode
/// vhost backend does: available-buffer notifications stay off, so the driver rings no doorbell
/// while the device keeps up. Idle, it backs off to short sleeps. Stops on `stop()` or deinit.
public final class SoftPoller: @unchecked Sendable {
    let halt = Atomic<Bool>(false)
    let done = Atomic<Bool>(false)
    private var thread = pthread_t()
    let body: (SoftPoller) -> Void

    init(_ body: @escaping (SoftPoller) -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<SoftPoller>.fromOpaque(arg!).takeRetainedValue()
            cshim_name_thread("virtio-poller")
            me.body(me)
            me.done.store(true, ordering: .releasing)
            return nil
        }, box)
        precondition(rc == 0, "pthread_create: \(rc)")
    }

    var stopping: Bool { halt.load(ordering: .acquiring) }

    public func stop() {
        guard !halt.exchange(true, ordering: .acquiringAndReleasing) else { return }
        pthread_join(thread, nil)
    }

    deinit { if !halt.load(ordering: .acquiring) { halt.store(true, ordering: .releasing) } }
}

extension SoftPCIFunction {
    /// Starts the device's own polling thread (see `SoftPoller`); `eachTurn` runs on that thread
    /// after every round over the queues (a test samples the thread's allocation count there).
    public func startPolling(eachTurn: (@Sendable () -> Void)? = nil) -> SoftPoller {
        SoftPoller { [weak self] poller in
            var idle = 0
            // One weak load per stretch of up to 256 busy turns, not one per turn (with its retain
            // and release): the function can still go away between stretches, and an idle poller
            // lets go of it before it sleeps.
            while !poller.stopping, let me = self {
                var turns = 0
                while turns < 256, !poller.stopping {
                    eachTurn?()
                    idle = me.pollTurn() ? 0 : idle + 1
                    turns += 1
                    if idle > 100 { break }
                }
                if idle > 2000 { usleep(100) } else if idle > 100 { sched_yield() }
            }
        }
    }

    /// One round over the request queues; true when any of them completed something.
    private func pollTurn() -> Bool {
        guard live.load(ordering: .acquiring), busMaster.load(ordering: .acquiring), !stopped.load(ordering: .acquiring) else {
            return false
        }
        var moved = false
        let negotiated = negotiatedFeatures
        let memory = arena  // one lock per round, not per queue
        for q in 0..<personality.queueCount {
            let before = queues[q].completedCount.load(ordering: .relaxed)
            if let why = queues[q].process(personality: personality, memory: memory, negotiated: negotiated,
                                           faults: faults, isr: isr, stopped: stopped, polling: true) {
                deviceError(why)
            }
            if queues[q].completedCount.load(ordering: .relaxed) != before { moved = true }
        }
        return moved
    }
}
