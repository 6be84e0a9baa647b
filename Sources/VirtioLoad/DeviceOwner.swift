import VirtioCore
import VirtioDrivers
#if canImport(Glibc)
import Glibc
#endif

/// How a long-running owner of a device behaves (`virtioctl attach`).
public struct OwnerOptions {
    /// The statistics region to keep (created, updated, removed at the end); nil: none.
    public var statsFile: String?
    /// Region update period.
    public var intervalMilliseconds = 200
    /// When to stop on its own (monotonic nanoseconds); nil: only when `shouldStop` says so.
    public var deadline: UInt64?
    /// Polled every loop turn (a signal handler's flag).
    public var shouldStop: () -> Bool = { false }
    /// A software device's own statistics clock: asked every `softInterval` ms (0: never).
    public var askSoftDevice: (() -> Void)?
    public var softIntervalMilliseconds = 0
    /// Progress notes for a person (attached, region path, totals).
    public var note: (String) -> Void = { _ in }
    public init() {}
}

/// The owner loops: answer the device's statistics queue, keep the driver's counters in a
/// statistics region, optionally run a background block load, until told to stop.
public enum DeviceOwner {
    @inlinable
    public static func own<T: VirtioTransport>(balloon: BalloonDevice<T>, _ o: OwnerOptions) throws {
        let name = balloon.device.transport.name
        let stats = DriverStatistics(id: "virtio-balloon \(name)", queues: 0, block: false, balloon: true)
        let writer = try region(stats, o)
        defer { writer?.remove() }
        o.note("attached \(name) (balloon\(balloon.stats == nil ? ", no statistics queue" : "")); SIGINT or SIGTERM to stop")
        var clock = OwnerClock(o)
        while let now = clock.turn() {
            let answered = try balloon.poll()
            if let writer, clock.regionDue(now, answered) {
                writer.update { v in stats.write(balloon: balloon.stats?.lastPosted ?? [], requests: balloon.stats?.requests ?? 0, to: v) }
            }
            if !answered { usleep(1000) }
        }
        o.note("\(balloon.stats?.requests ?? 0) statistics request(s) answered; device reset")
    }

    /// Inlinable: the background load runs specialised for the caller's transport.
    @inlinable
    public static func own<T: VirtioTransport>(block blk: BlockDevice<T>, load: LoadSpec?, _ o: OwnerOptions) throws {
        blk.setAccounting(true)
        let name = blk.device.transport.name
        let stats = DriverStatistics(id: "virtio-blk \(name)", queues: blk.queueCount, block: true, balloon: false)
        let writer = try region(stats, o)
        defer { writer?.remove() }
        try blk.startStatistics()
        o.note("attached \(name) (blk, \(blk.queueCount) queue(s)\(blk.stats != nil ? ", draft statistics queue" : ""))"
               + "\(load.map { ", load \($0.pattern.rawValue) qd \($0.depth)" } ?? ""); SIGINT or SIGTERM to stop")
        var generator = try load.map { try LoadGenerator(blk, $0) }
        var clock = OwnerClock(o)
        while let now = clock.turn() {
            let worked = try generator?.step() ?? false
            let answered = try blk.pollStatistics()
            if let writer, clock.regionDue(now, answered) {
                writer.update { v in
                    for q in 0..<blk.queueCount { stats.write(queue: q, blk.counters(queue: q), io: blk.io(queue: q), to: v) }
                    stats.write(block: blk.statEntries(), requests: blk.stats?.requests ?? 0, to: v)
                }
            }
            if !worked && !answered { usleep(1000) }
        }
        _ = try? generator?.drain()
        generator = nil
        let io = blk.ioCounters
        o.note("\(io.readIOs) reads, \(io.writeIOs) writes, \(io.errors) errors; \(blk.stats?.requests ?? 0) statistics request(s) answered; device reset")
    }

    @usableFromInline
    static func region(_ stats: DriverStatistics, _ o: OwnerOptions) throws -> StatsRegionWriter? {
        guard let path = o.statsFile else { return nil }
        let w = try StatsRegionWriter(path: path, layout: stats.layout)
        o.note("statistics region \(path) (\(stats.layout.descriptors.count) statistics); read it with `virtioctl stats \(path)`")
        return w
    }
}

/// The owner loop's clock: stop conditions, the soft device's own request clock, region updates.
@usableFromInline
struct OwnerClock {
    @usableFromInline let o: OwnerOptions
    @usableFromInline var nextUpdate: UInt64 = 0, nextSoftRequest: UInt64 = 0
    @usableFromInline init(_ o: OwnerOptions) { self.o = o }

    /// The time of this turn, or nil when the loop should end.
    @usableFromInline
    mutating func turn() -> UInt64? {
        guard !o.shouldStop() else { return nil }
        let now = monotonicNanoseconds()
        if let end = o.deadline, now >= end { return nil }
        // A soft device asks on its own clock (stats_interval), here in the same loop.
        if let ask = o.askSoftDevice, o.softIntervalMilliseconds > 0, now >= nextSoftRequest {
            ask()
            nextSoftRequest = now + UInt64(o.softIntervalMilliseconds) * 1_000_000
        }
        return now
    }

    /// Whether the region should be rewritten now (new statistics arrived, or the period passed).
    @usableFromInline
    mutating func regionDue(_ now: UInt64, _ changed: Bool) -> Bool {
        guard changed || now >= nextUpdate else { return false }
        nextUpdate = now + UInt64(o.intervalMilliseconds) * 1_000_000
        return true
    }
}
