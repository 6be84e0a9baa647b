import Logging
import VirtioCore
import VirtioRing
import VirtioWire

/// A virtio-balloon driver for its statistics queue (`VIRTIO_BALLOON_F_STATS_VQ`): it reports this
/// system's memory statistics whenever the device asks. It does not inflate or deflate: the
/// balloon stays empty (`actual` 0) and the device's `num_pages` wish is only reported.
public final class BalloonDevice<T: VirtioTransport> {
    public let device: VirtioDevice<T>
    /// inflateq (0) and deflateq (1) exist on every balloon and are set up, never used.
    let inflate: UnsafeMutablePointer<Virtqueue<T>>
    public let stats: StatsQueueResponder<T>?
    /// Where the statistics come from (this system's /proc by default).
    public var provider: () -> [StatEntry] = MemoryStats.current

    /// Negotiates STATS_VQ (required unless `requireStats` is false), sets up the queues, sets
    /// DRIVER_OK and posts the first statistics buffer, as the spec's initialisation says.
    public init(transport: T, policy: FeaturePolicy = FeaturePolicy(), requireStats: Bool = true,
                logger: Logger = Logger(label: "virtio.balloon")) throws(VirtioError) {
        let d = VirtioDevice(transport: transport, logger: logger)
        device = d
        guard transport.deviceType == .balloon else {
            throw .wrongDeviceType(device: transport.name, expected: "balloon", found: transport.deviceTypeName)
        }
        do throws(VirtioError) {
            try d.initialize(policy: policy, deviceTypeBits: [BalloonFeature.statsVQ])
            if requireStats, !d.has(BalloonFeature.statsVQ) {
                throw VirtioError.requiredFeatureNotOffered(["VIRTIO_BALLOON_F_STATS_VQ"])
            }
            inflate = .allocate(capacity: 2)
            inflate.initialize(to: try d.makeQueue(0, size: 8))
            do { (inflate + 1).initialize(to: try d.makeQueue(1, size: 8)) } catch {
                inflate.deinitialize(count: 1)
                inflate.deallocate()
                throw error
            }
            stats = d.has(BalloonFeature.statsVQ) ? try StatsQueueResponder(device: d, queueIndex: 2, capacity: 16) : nil
            try d.driverOK()
            try stats?.post(provider())
        } catch {
            d.fail()
            throw error
        }
    }

    deinit {
        try? device.reset()
        inflate.deinitialize(count: 2)
        inflate.deallocate()
    }

    /// Answers the device if it asked for statistics; true when it had.
    @discardableResult
    public func poll() throws(VirtioError) -> Bool {
        guard let stats else { return false }
        return try stats.poll(provider)
    }

    /// The balloon size the device asks for (`num_pages`, 4 KiB pages) and what the driver reports (`actual`).
    public func pages() throws(VirtioError) -> (wanted: UInt32, actual: UInt32) {
        let c = try device.readConfig { (c: ConfigReader) throws(VirtioError) -> BalloonConfig in
            try BalloonConfig.decode(read: c.read(offset:width:))
        }
        return (c.numPages, c.actual)
    }
}
