import Synchronization
import VirtioCore
import VirtioPCI
import VirtioRing
#if canImport(Glibc)
import Glibc
#endif

/// What a protocol server needs to host the software function in another process's memory
/// (vfio-user today, vhost-user next): it reaches the client's DMA memory through the server's
/// mapping of it, and signals the client's eventfds. The servers adopt it; this module knows none of them.
extension SoftPCIFunction {
    public var configSpaceSize: Int { configSize }

    /// The peer's memory, with `owner` (the mapping's owner, which unmaps when freed) kept alive as
    /// long as the device, or its poller in the middle of a round, still holds the arena.
    public func adoptDMA(pointer: UnsafeMutableRawPointer, length: Int, address: UInt64, owner: AnyObject?) -> String? {
        guard !anyQueueRunning else { return "queues are running on the current DMA memory" }
        arenaBox.withLock { $0 = DMAArena(external: pointer, size: length, deviceBase: address, owner: owner) }
        return nil
    }

    public func dropDMA() -> String? {
        guard !anyQueueRunning else { return "queues are running on that DMA memory (reset the device first)" }
        // Nothing to reach until the next DMA_MAP: a one-page private arena no driver address falls in.
        if let empty = try? DMAArena(size: 4096, deviceBase: 0xFFFF_0000_0000_0000) { arenaBox.withLock { $0 = empty } }
        return nil
    }

    public func useInterruptEventFDs(_ fds: [Int32]) {
        disableInterrupts()
        guard !fds.isEmpty else { return }
        // Our own duplicates: the server closes the originals when the client replaces or drops them.
        interruptFDs.withLock { $0 = EventFDSet(adopting: fds.map { dup($0) }) }
        registers.withLock { $0.config[SoftBAR.msixEnableByte] |= SoftBAR.msixEnableMask }
    }

    public func resetDevice() { writeStatus(0) }

    var anyQueueRunning: Bool { registers.withLock { r in r.queues.contains { $0.enabled } } }
}
