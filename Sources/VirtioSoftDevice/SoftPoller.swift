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
            while !poller.stopping, let me = self {
                eachTurn?()
                var moved = false
                if me.live.load(ordering: .acquiring), me.busMaster.load(ordering: .acquiring),
                   !me.stopped.load(ordering: .acquiring) {
                    let negotiated = me.negotiatedFeatures
                    let memory = me.arena  // one lock per round, not per queue
                    for q in 0..<me.personality.queueCount {
                        let before = me.queues[q].completedCount.load(ordering: .relaxed)
                        if let why = me.queues[q].process(personality: me.personality, memory: memory, negotiated: negotiated,
                                                          faults: me.faults, isr: me.isr, stopped: me.stopped, polling: true) {
                            me.deviceError(why)
                        }
                        if me.queues[q].completedCount.load(ordering: .relaxed) != before { moved = true }
                    }
                }
                idle = moved ? 0 : idle + 1
                if idle > 2000 { usleep(100) } else if idle > 100 { sched_yield() }
            }
        }
    }
}
