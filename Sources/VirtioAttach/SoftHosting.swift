import VFIOUser
import VhostUser
import VirtioPCI
import VirtioSoftDevice

/// How `softdev serve` hosts a software function behind a socket.
public struct HostingOptions {
    /// The bound on a silent or stalled client, in milliseconds.
    public var timeoutMilliseconds = 5_000
    /// Poll the queues on a device thread of its own (no doorbells needed).
    public var poll = true
    /// Connection and DMA-mapping events (verbose), and problems with a client.
    public var log: ((String) -> Void)?
    public var warn: (String) -> Void = { _ in }
    public init() {}
}

/// The software function behind `softdev serve`: its hosting API is what the vfio-user server asks for.
extension SoftPCIFunction: VFIOUserHostedDevice {}
/// ... and what the vhost-user backend asks for.
extension SoftPCIFunction: VhostUserHostedDevice {}

extension SoftFunction {
    /// How the function names itself (`soft:blk`).
    public var address: String {
        switch self {
        case let .block(f): f.address
        case let .balloon(f): f.address
        case let .net(f): f.address
        }
    }

    /// A net function's frame counters so far (nil for other types), for a person watching a server.
    public var trafficSummary: String? {
        guard case let .net(f) = self else { return nil }
        let c = f.personality.counters
        return "soft:net counters so far: driver transmitted \(c.txFrames) frames (\(c.txBytes) bytes, \(c.txDropped) dropped), "
            + "driver received \(c.rxFrames) frames (\(c.rxBytes) bytes), \(c.rxDropped) dropped for want of buffers, \(c.rxFiltered) filtered"
    }

    /// Serves the function over vfio-user on `path`, one client at a time, until `stop` returns
    /// true (checked between clients and while idle); returns how many clients were served.
    public func serveVFIOUser(path: String, options: HostingOptions, stop: @escaping (_ served: Int) -> Bool) throws -> Int {
        switch self {
        case let .block(f): try Self.serve(f, path: path, options: options, stop: stop)
        case let .balloon(f): try Self.serve(f, path: path, options: options, stop: stop)
        case let .net(f): try Self.serve(f, path: path, options: options, stop: stop)
        }
    }

    private static func serve<P>(_ f: SoftPCIFunction<P>, path: String, options: HostingOptions,
                                 stop: @escaping (Int) -> Bool) throws -> Int {
        let poller = options.poll ? f.startPolling() : nil
        defer { poller?.stop() }
        let server = try VFIOUserServer(path: path, device: f)
        server.timeoutMilliseconds = options.timeoutMilliseconds
        if let log = options.log { server.log = log }
        server.warn = options.warn
        server.run { stop(server.clientsFinished) }
        return server.clientsServed
    }

    /// Serves the function over vhost-user on `path` (the backend side), one frontend at a time,
    /// until `stop` returns true; returns how many frontends were served. After each frontend the
    /// driver-conformance violations the device saw during it go to `options.warn` (none: a log line).
    public func serveVhostUser(path: String, options: HostingOptions, stop: @escaping (_ served: Int) -> Bool) throws -> Int {
        switch self {
        case let .block(f): return try Self.serveVhost(f, soft: self, path: path, options: options, stop: stop)
        case let .net(f): return try Self.serveVhost(f, soft: self, path: path, options: options, stop: stop)
        case .balloon:
            throw AttachError.notSupported("soft:balloon cannot be served over vhost-user: no vhost-user frontend drives a balloon (QEMU 7.2 has none); serve it over vfio-user")
        }
    }

    private static func serveVhost<P>(_ f: SoftPCIFunction<P>, soft: SoftFunction, path: String, options: HostingOptions,
                                      stop: @escaping (Int) -> Bool) throws -> Int {
        let poller = options.poll ? f.startPolling() : nil
        defer { poller?.stop() }
        let backend = try VhostUserBackend(path: path, device: f)
        backend.timeoutMilliseconds = options.timeoutMilliseconds
        backend.devicePolls = options.poll
        if let log = options.log { backend.log = log }
        backend.warn = options.warn
        var reported = 0, reportedTotal = 0
        backend.clientLeft = { n in
            let all = soft.violations, total = soft.violationTotal
            let new = all.dropFirst(reported)
            let counted = total - reportedTotal - new.count
            reported = all.count
            reportedTotal = total
            if let traffic = soft.trafficSummary { options.warn("frontend \(n): \(traffic)") }
            if new.isEmpty, counted == 0 { (options.log ?? { _ in })("frontend \(n): no driver conformance violations") }
            for v in new { options.warn("frontend \(n): driver violation: \(v)") }
            if counted > 0 { options.warn("frontend \(n): \(counted) more driver violations of the rules above (counted, not kept)") }
        }
        backend.run { stop(backend.clientsFinished) }
        return backend.clientsServed
    }
}
