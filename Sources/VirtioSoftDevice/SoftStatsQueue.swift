import Synchronization
import VirtioCore
import VirtioRing
import VirtioWire

/// The device side of a statistics queue (balloon STATS_VQ, or the blk draft of seed 000): it
/// keeps the one buffer the driver posts, reads the entries in it, and returns it (empty) when it
/// wants fresh numbers. It checks the driver's side of the protocol: one buffer at a time,
/// whole 10-byte entries, known tags only.
public final class SoftStatsSink: Sendable {
    struct State {
        var holding = false
        var last: [StatEntry] = []
        var updates = 0
        var requests = 0
    }
    let state = Mutex(State())
    /// Tags the driver may send (balloon: 0-9 and the newer ones up to 15; blk draft: 0-10).
    public let knownTags: ClosedRange<UInt16>
    public let log: ConformanceLog

    init(knownTags: ClosedRange<UInt16>, log: ConformanceLog) {
        self.knownTags = knownTags
        self.log = log
    }

    /// The entries the driver last posted, and how many buffers it posted in all.
    public var lastEntries: [StatEntry] { state.withLock { $0.last } }
    public var updates: Int { state.withLock { $0.updates } }
    public var requests: Int { state.withLock { $0.requests } }
    public var holding: Bool { state.withLock { $0.holding } }

    static let rule = "balloon statistics (device-types/balloon): the driver keeps at most one buffer in the statsq, made of whole le16 tag + le64 value entries"

    /// A buffer arrived on the statistics queue: read it, keep it.
    func received(chain: AvailableChain, elements: UnsafeMutableBufferPointer<ChainElement>, memory: DMAArena) -> RequestOutcome {
        let io = ChainIO(elements: elements, chain: chain, memory: memory)
        let n = io.readableBytes
        if chain.writableLength > 0 { log.violation(Self.rule, "statistics buffer has \(chain.writableLength) device-writable bytes") }
        var bytes = [UInt8](repeating: 0, count: min(n, 1 << 16))
        if !bytes.isEmpty, !bytes.withUnsafeMutableBytes({ io.read(at: 0, into: $0.baseAddress!, length: $0.count) }) {
            return .malformed("statistics buffer outside DMA memory")
        }
        let entries = StatEntry.decode(bytes)
        if entries == nil { log.violation(Self.rule, "statistics buffer of \(n) bytes is not whole 10-byte entries") }
        for e in entries ?? [] where !knownTags.contains(e.tag) {
            log.violation(Self.rule, "statistics tag \(e.tag) is not one the device defines")
        }
        state.withLock { s in
            if s.holding { log.violation(Self.rule, "a second statistics buffer arrived while the device held one") }
            s.holding = true
            s.last = entries ?? []
            s.updates += 1
        }
        return .keep
    }

    func requested() { state.withLock { $0.holding = false; $0.requests += 1 } }
}

/// How a software virtio-balloon is built: `soft:balloon[,stats_vq=on,pages=N]`.
public struct SoftBalloonOptions: Sendable, Equatable {
    public var statsQueue = true
    /// num_pages: the balloon size the device asks for.
    public var pages: UInt32 = 0
    /// The device asks for statistics this often (milliseconds; 0: only when `requestStatistics()` is called).
    public var statsInterval = 1000
    public var dmaBytes = 16 << 20
    /// Hostile modes, as on soft:blk (needs_reset counts block requests, so it is not offered here).
    public var faults = SoftFaults()
    public init() {}
    public static let keys: [(String, String)] = [
        ("stats_vq", "offer VIRTIO_BALLOON_F_STATS_VQ (on|off)"),
        ("fault", "hostile device mode (repeatable): " + SoftFaults.modeNames.filter { $0 != "needs_reset" }.joined(separator: ", ")),
        ("fault_after", "buffers completed before a fault mode strikes (default 8)"),
        ("pages", "num_pages, the balloon size the device asks for (4 KiB pages)"),
        ("stats_interval", "ask the driver for statistics every N ms (0: never by itself)"),
    ]

    public init(parsing pairs: [String]) throws(SoftDeviceError) {
        self.init()
        for pair in pairs where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw .badOption("'\(pair)' is not key=value") }
            switch kv[0].replacingDash() {
            case "stats_vq":
                guard ["on", "off"].contains(kv[1]) else { throw .badOption("stats_vq=\(kv[1]): expected on or off") }
                statsQueue = kv[1] == "on"
            case "pages":
                guard let n = UInt32(kv[1]) else { throw .badOption("pages=\(kv[1]): expected a page count") }
                pages = n
            case "stats_interval":
                guard let n = Int(kv[1]), (0...60_000).contains(n) else { throw .badOption("stats_interval=\(kv[1]): expected 0...60000 ms") }
                statsInterval = n
            case "fault":
                guard kv[1] != "needs_reset", faults.enable(kv[1].lowercased()) else {
                    throw .badOption("fault=\(kv[1]): no such mode for soft:balloon; modes: "
                        + SoftFaults.modeNames.filter { $0 != "needs_reset" }.joined(separator: ", "))
                }
            case "fault_after":
                guard let n = Int(kv[1]), (0...1_000_000).contains(n) else { throw .badOption("fault_after=\(kv[1]): expected 0...1000000") }
                faults.faultAfterRequests = n
            default:
                throw .badOption("unknown key '\(kv[0])'; soft:balloon understands " + Self.keys.map(\.0).joined(separator: ", "))
            }
        }
    }
}

/// The virtio-balloon personality: inflate and deflate queues (PFNs acknowledged, nothing
/// reclaimed) and the statistics queue.
public final class SoftBalloon: SoftPersonality, @unchecked Sendable {
    public let options: SoftBalloonOptions
    public let stats: SoftStatsSink
    /// Rules the driver broke on the statistics queue.
    public let log: ConformanceLog

    public init(options: SoftBalloonOptions) {
        self.options = options
        let log = ConformanceLog()
        self.log = log
        stats = SoftStatsSink(knownTags: 0...15, log: log)
    }

    public var deviceType: VirtioDeviceType { .balloon }
    public var queueCount: Int { options.statsQueue ? 3 : 2 }
    public var maxQueueSize: Int { 64 }
    public var deviceFeatures: FeatureSet { options.statsQueue ? [BalloonFeature.statsVQ] : [] }
    public var statisticsQueue: Int? { options.statsQueue ? 2 : nil }
    public var statisticsSink: SoftStatsSink? { options.statsQueue ? stats : nil }

    /// `struct virtio_balloon_config`: the pages asked for; the balloon starts empty.
    public func configBytes() -> [UInt8] { BalloonConfig(numPages: options.pages, actual: 0).encoded() }

    public func handle(queue: Int, chain: AvailableChain, elements: UnsafeMutableBufferPointer<ChainElement>,
                       memory: DMAArena, negotiated: FeatureSet) -> RequestOutcome {
        if queue == 2 { return stats.received(chain: chain, elements: elements, memory: memory) }
        // inflateq/deflateq: arrays of le32 PFNs; acknowledged, nothing reclaimed.
        return .used(0)
    }
}

extension SoftPCIFunction where P == SoftBalloon {
    /// A software virtio-balloon PCI function.
    public static func balloon(_ options: SoftBalloonOptions, address: String = "soft:balloon") throws(SoftDeviceError)
        -> SoftPCIFunction<SoftBalloon> {
        try SoftPCIFunction(personality: SoftBalloon(options: options), address: address, dmaBytes: options.dmaBytes,
                            faults: options.faults, ringFeatures: SoftRingFeatures(bits: [VirtioFeature.ringPacked, VirtioFeature.eventIdx,
                                                                  VirtioFeature.indirectDesc]))
    }
}

extension SoftPCIFunction {
    /// The device asks for statistics: it returns the buffer it holds (if the driver posted one).
    /// True when a buffer went back.
    @discardableResult
    public func requestStatistics() -> Bool {
        guard let q = personality.statisticsQueue, let sink = personality.statisticsSink, live.load(ordering: .acquiring),
              !stopped.load(ordering: .acquiring) else { return false }
        guard queues[q].returnKept(isr: isr, unasked: faults.statsUnasked) else { return false }
        sink.requested()
        return true
    }
}
