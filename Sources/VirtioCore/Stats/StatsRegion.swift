import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Values of the data block, written through relaxed atomics (readers copy them concurrently).
public struct StatsValues {
    let data: UnsafeMutableRawPointer
    let count: Int
    @inline(__always) func slot(_ i: Int) -> UnsafePointer<Atomic<UInt64>> {
        UnsafePointer((data + i * 8).assumingMemoryBound(to: Atomic<UInt64>.self))
    }
    public subscript(i: Int) -> UInt64 {
        get { slot(i).pointee.load(ordering: .relaxed) }
        nonmutating set { precondition(i >= 0 && i < count); slot(i).pointee.store(newValue, ordering: .relaxed) }
    }
}

/// The one writer of a statistics region: a file (typically under /dev/shm) laid out as
/// `StatsLayout` says, updated under a seqlock so any number of readers get consistent snapshots.
public final class StatsRegionWriter: @unchecked Sendable {  // one thread updates at a time
    public let path: String
    public let layout: StatsLayout
    let base: UnsafeMutableRawPointer
    let length: Int
    let values: StatsValues
    var sequence: UInt64 = 0

    /// Creates the region (published by rename, so readers never see a half-written header).
    /// An existing region whose writer is alive is not taken over.
    public init(path: String, layout: StatsLayout) throws(StatsError) {
        self.path = path
        self.layout = layout
        if let other = try? StatsRegionReader(path: path), other.staleness == nil {
            let pid = (try? other.snapshot().values[StatsLayout.pidIndex]) ?? 0
            throw .io("\(path) is the live statistics region of process \(pid); pick another --stats-file or stop that process")
        }
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = layout.encoded
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            unlink(tmp)
            throw .io("cannot write \(tmp): \(String(cString: strerror(errno)))")
        }
        guard let p = mmap(nil, bytes.count, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            unlink(tmp)
            throw .io("cannot map \(tmp): \(String(cString: strerror(errno)))")
        }
        guard rename(tmp, path) == 0 else {
            munmap(p, bytes.count)
            unlink(tmp)
            throw .io("cannot publish \(path): \(String(cString: strerror(errno)))")
        }
        base = p
        length = bytes.count
        values = StatsValues(data: p + layout.dataOffset, count: layout.valueCount)
        update { v in v[StatsLayout.pidIndex] = UInt64(getpid()) }
    }

    deinit { munmap(base, length) }

    /// One consistent update: the sequence count is odd while `body` writes (seqlock).
    public func update(_ body: (StatsValues) -> Void) {
        let seq = values.slot(StatsLayout.seqIndex)
        sequence &+= 1
        seq.pointee.store(sequence, ordering: .relaxed)
        // Writes below may not move above the odd count (readers seeing them see odd, or a change).
        atomicMemoryFence(ordering: .releasing)
        body(values)
        values[StatsLayout.heartbeatIndex] = monotonicNanoseconds()
        sequence &+= 1
        seq.pointee.store(sequence, ordering: .releasing)  // publishes the values written before it
    }

    /// Removes the file (a clean shutdown; readers then report the region gone).
    public func remove() { unlink(path) }
}

/// A consistent copy of a region's values.
public struct StatsSnapshot: Sendable {
    public let values: [UInt64]
    public var heartbeat: UInt64 { values[StatsLayout.heartbeatIndex] }
    public var writerPID: Int32 { Int32(truncatingIfNeeded: values[StatsLayout.pidIndex]) }
    /// Value `i` of `d`; 0 outside the data block (parse refuses such layouts; this is the second line).
    public func value(_ d: StatDescriptor, _ i: Int = 0) -> UInt64 {
        let at = d.index + i
        return at >= 0 && at < values.count ? values[at] : 0
    }
}

/// A reader of a statistics region: parses and checks its layout once, then copies the data
/// block under the seqlock as often as asked.
public final class StatsRegionReader {
    public let path: String
    public let layout: StatsLayout
    public let inode: UInt64
    let base: UnsafeRawPointer
    let length: Int
    /// A writer silent for this long is reported stale even if its process lives.
    public var staleAfterNanoseconds: UInt64 = 5_000_000_000

    public init(path: String) throws(StatsError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io("cannot stat \(path)") }
        let size = Int(st.st_size)
        guard size >= StatsLayout.headerSize, size <= 64 << 20 else { throw .malformed("\(path) is \(size) bytes") }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw .io("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        let head = Array(UnsafeRawBufferPointer(start: p, count: size))
        do { layout = try StatsLayout.parse(head) } catch {
            munmap(p, size)
            throw error
        }
        base = UnsafeRawPointer(p)
        length = size
        inode = UInt64(st.st_ino)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), length) }

    /// Copies the data block; retries while the writer is mid-update (bounded).
    public func snapshot(tries: Int = 10_000) throws(StatsError) -> StatsSnapshot {
        let data = base + layout.dataOffset
        let n = layout.valueCount
        let seq = UnsafePointer((data).assumingMemoryBound(to: Atomic<UInt64>.self))
        var out = [UInt64](repeating: 0, count: n)
        for attempt in 0..<tries {
            let before = seq.pointee.load(ordering: .acquiring)
            if before & 1 == 0 {
                for i in 0..<n {
                    out[i] = UnsafePointer((data + i * 8).assumingMemoryBound(to: Atomic<UInt64>.self)).pointee.load(ordering: .relaxed)
                }
                // The copies above may not move below the second read of the count.
                atomicMemoryFence(ordering: .acquiring)
                if seq.pointee.load(ordering: .relaxed) == before { return StatsSnapshot(values: out) }
            }
            if attempt > 100 { usleep(10) }
        }
        throw .busy(tries: tries)
    }

    /// Why the region is not live (`staleness`), said for a person; nil when live.
    public var staleReason: String? { staleness?.description }

    /// Why the region is not live: its writer is gone, silent, or the file was replaced; nil when live.
    public var staleness: StatsStaleness? {
        // The pid first, read on its own: a writer killed mid-update leaves the count odd for good.
        let pidSlot = UnsafePointer((base + layout.dataOffset + 8 * StatsLayout.pidIndex).assumingMemoryBound(to: Atomic<UInt64>.self))
        let pid = Int32(truncatingIfNeeded: pidSlot.pointee.load(ordering: .relaxed))
        if pid <= 0 { return .noWriter }
        if kill(pid, 0) != 0, errno == ESRCH { return .writerGone(pid: pid) }
        guard let s = try? snapshot(tries: 1000) else { return .tornUpdate }
        let now = monotonicNanoseconds()
        if now > s.heartbeat, now - s.heartbeat > staleAfterNanoseconds {
            return .silent(pid: pid, seconds: (now - s.heartbeat) / 1_000_000_000)
        }
        var st = stat()
        if stat(path, &st) != 0 { return .fileRemoved }
        if UInt64(st.st_ino) != inode { return .fileReplaced }
        return nil
    }

    /// A reader of the file now at `path` when this one was replaced there (a writer restarted); nil otherwise.
    public func reopenedIfReplaced() -> StatsRegionReader? {
        guard staleness == .fileReplaced else { return nil }
        return try? StatsRegionReader(path: path)
    }
}

/// Why a region is not live, so callers can act on it (reopen a replaced file) without matching prose.
public enum StatsStaleness: Sendable, Equatable, CustomStringConvertible {
    case noWriter
    case writerGone(pid: Int32)
    case silent(pid: Int32, seconds: UInt64)
    /// The seqcount stayed odd: the writer stopped mid-update.
    case tornUpdate
    case fileRemoved
    case fileReplaced

    /// True when the path no longer names the file this reader mapped: drop the reader.
    public var fileChanged: Bool { self == .fileRemoved || self == .fileReplaced }

    public var description: String {
        switch self {
        case .noWriter: "no writer recorded"
        case .writerGone(let pid): "its writer, process \(pid), is gone"
        case .silent(let pid, let seconds): "its writer, process \(pid), has not updated it for \(seconds) s"
        case .tornUpdate: "no consistent snapshot: the writer stopped mid-update"
        case .fileRemoved: "the file was removed"
        case .fileReplaced: "the file was replaced (reopen it)"
        }
    }
}
