import VirtioCore
import VirtioWire

/// The driver's counters laid out as a statistics region: per queue, per block device (seed 000's
/// set), and per balloon (what it last reported). Names are `queue<N>_<counter>` for per-queue values.
public struct DriverStatistics {
    public let layout: StatsLayout
    public let queues: Int
    public let block: Bool
    public let balloon: Bool
    /// Queue pairs of a net device (0: not one): receive queue 2p and transmit queue 2p+1 get `netCounters`.
    public let netPairs: Int
    private let index: [String: Int]

    public static let queueCounters: [(String, StatType)] = [
        ("buffers_added", .cumulative), ("buffers_used", .cumulative), ("notifications_sent", .cumulative),
        ("notifications_suppressed", .cumulative), ("interrupts", .cumulative), ("empty_polls", .cumulative),
        ("errors", .cumulative),
    ]
    /// Seed 000 (virtio-blk stats draft) names; ticks are milliseconds.
    public static let blockCounters: [(String, StatType, StatUnit, Int16)] = [
        ("blk_read_io", .cumulative, .none, 0), ("blk_read_merges", .cumulative, .none, 0),
        ("blk_read_sectors", .cumulative, .none, 0), ("blk_read_ticks", .cumulative, .seconds, -3),
        ("blk_write_io", .cumulative, .none, 0), ("blk_write_merges", .cumulative, .none, 0),
        ("blk_write_sectors", .cumulative, .none, 0), ("blk_write_ticks", .cumulative, .seconds, -3),
        ("blk_in_flight", .instant, .none, 0), ("blk_io_ticks", .cumulative, .seconds, -3),
        ("blk_time_in_queue", .cumulative, .seconds, -3),
    ]

    /// Per net queue (receive and transmit): frames, bytes, drops, errors, and buffers posted (receive).
    public static let netCounters: [(String, StatUnit)] = [
        ("net_packets", .none), ("net_bytes", .bytes), ("net_drops", .none), ("net_errors", .none), ("net_refills", .none),
    ]

    public init(id: String, queues: Int, block: Bool, balloon: Bool, netPairs: Int = 0) {
        var stats: [StatDescriptor] = []
        for q in 0..<queues {
            for (name, type) in Self.queueCounters { stats.append(StatDescriptor(name: "queue\(q)_\(name)", type: type)) }
            stats.append(StatDescriptor(name: "queue\(q)_latency_ns", type: .logHistogram, unit: .seconds, exponent: -9,
                                        size: UInt16(LatencyBuckets.count)))
        }
        for q in 0..<2 * netPairs {
            for (name, unit) in Self.netCounters where q % 2 == 0 || name != "net_refills" {
                stats.append(StatDescriptor(name: "queue\(q)_\(name)", type: .cumulative, unit: unit))
            }
        }
        if block {
            for (name, type, unit, exp) in Self.blockCounters {
                stats.append(StatDescriptor(name: name, type: type, unit: unit, exponent: exp))
            }
            stats.append(StatDescriptor(name: "blk_statsq_requests", type: .cumulative))
        }
        if balloon {
            stats.append(StatDescriptor(name: "balloon_statsq_requests", type: .cumulative))
            for t in 0..<UInt16(10) {
                let name = BalloonStatTag.name(t)
                let bytes = t == BalloonStatTag.swapIn || t == BalloonStatTag.swapOut || (4...7).contains(t)
                stats.append(StatDescriptor(name: "balloon_" + name, type: .instant, unit: bytes ? .bytes : .none))
            }
        }
        layout = StatsLayout(id: id, stats: stats)
        self.queues = queues
        self.block = block
        self.balloon = balloon
        self.netPairs = netPairs
        var idx: [String: Int] = [:]
        for d in layout.descriptors { idx[d.name] = d.index }
        index = idx
    }

    public func set(_ v: StatsValues, _ name: String, _ value: UInt64) {
        if let i = index[name] { v[i] = value }
    }

    public func write(queue q: Int, _ c: QueueCounters, io: BlockIOCounters?, to v: StatsValues) {
        let values = [c.buffersAdded, c.buffersUsed, c.notificationsSent, c.notificationsSuppressed, c.interrupts,
                      c.emptyPolls, io?.errors ?? 0]
        for (i, (name, _)) in Self.queueCounters.enumerated() { set(v, "queue\(q)_\(name)", values[i]) }
        if let io, let base = index["queue\(q)_latency_ns"] {
            for b in 0..<LatencyBuckets.count { v[base + b] = io.latency[b] }
        }
    }

    /// A net queue's counters (`queue` is the virtqueue index: 2p receive, 2p+1 transmit).
    public func write(netQueue q: Int, _ n: NetQueueStats, to v: StatsValues) {
        let values = [n.packets, n.bytes, n.drops, n.errors, n.refills]
        for (i, (name, _)) in Self.netCounters.enumerated() { set(v, "queue\(q)_\(name)", values[i]) }
    }

    public func write(block entries: [StatEntry], requests: UInt64, to v: StatsValues) {
        for e in entries where Int(e.tag) < Self.blockCounters.count { set(v, Self.blockCounters[Int(e.tag)].0, e.value) }
        set(v, "blk_statsq_requests", requests)
    }

    public func write(balloon entries: [StatEntry], requests: UInt64, to v: StatsValues) {
        for e in entries { set(v, "balloon_" + BalloonStatTag.name(e.tag), e.value) }
        set(v, "balloon_statsq_requests", requests)
    }
}
