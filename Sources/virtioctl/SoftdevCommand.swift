import ArgumentParser
import Logging
import Synchronization
import VFIO
import VFIOUser
import VirtioPCI
import VirtioSoftDevice
#if canImport(Glibc)
import Glibc
#endif

/// Set by SIGINT/SIGTERM: the server finishes the current client and exits.
let serveStop = Atomic<Bool>(false)

extension VirtioCtl {
    /// `virtioctl softdev serve`: the software device as a process of its own.
    struct Softdev: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a software virtio device as its own process.", subcommands: [Serve.self])

        struct Serve: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Serve a software device over vfio-user on a UNIX socket (one client at a time).",
                discussion: """
                    Then any verb takes vfio-user:PATH as DEVICE, e.g. `virtioctl info vfio-user:/tmp/blk.sock`. SIGINT/SIGTERM stops the server.
                    One client is served at a time. A client that sends no VERSION within --peer-timeout of connecting, stalls inside \
                    a message for that long, or stops taking replies for that long is dropped (the device reset, as on disconnect) \
                    and the next client is served. A client may stay idle between messages for as long as it likes.
                    """)

            @Option(help: "The UNIX socket to listen on (replaced if it exists).") var socket: String
            @Option(help: "Device type when no DEVICE is given: blk or balloon.") var type: String = "blk"
            @Argument(help: "The device, with options: soft:blk[,key=value...] or soft:balloon[,...] (default soft:<type>).")
            var device: String?
            @Option(help: "Stop after serving this many clients (default: until SIGINT/SIGTERM).") var clients: Int?
            @Flag(name: .shortAndLong, help: "Print each connection and DMA mapping to stderr.") var verbose = false
            @Option(name: .customLong("peer-timeout"), help: "The bound on a silent or stalled client, in milliseconds.")
            var peerTimeout: Int = 5_000

            func validate() throws {
                guard peerTimeoutRange.contains(peerTimeout) else { throw ValidationError("--peer-timeout must be in \(peerTimeoutRange) ms") }
            }
            @Flag(inversion: .prefixedNo, help: "Poll the queues on a device thread of its own (no doorbells needed); --no-poll serves on doorbells only.")
            var poll = true

            func run() throws {
                guard ["blk", "balloon"].contains(type) else { throw CLIError("--type \(type): expected blk or balloon") }
                let spec = try DeviceSpec(parsing: device ?? "soft:\(type)")
                signal(SIGINT) { _ in serveStop.store(true, ordering: .releasing) }
                signal(SIGTERM) { _ in serveStop.store(true, ordering: .releasing) }
                signal(SIGPIPE, SIG_IGN)
                unblockStopSignals()
                switch spec {
                case let .softBlock(o):
                    let f = try SoftPCIFunction.block(o)
                    let poller = poll ? f.startPolling() : nil
                    defer { poller?.stop() }
                    try serve(f)
                case let .softBalloon(o):
                    let f = try SoftPCIFunction.balloon(o)
                    let poller = poll ? f.startPolling() : nil
                    defer { poller?.stop() }
                    try serve(f)
                default: throw CLIError("softdev serve hosts software devices: soft:blk[,...] or soft:balloon[,...]")
                }
            }

            func serve<D: VFIOUserHostedDevice>(_ f: D) throws {
                let server = try VFIOUserServer(path: socket, device: f)
                server.timeoutMilliseconds = peerTimeout
                if verbose { server.log = { note("softdev: \($0)") } }
                server.warn = { note("softdev: \($0)") }
                note("softdev: serving \(f.address) on \(socket) (vfio-user); SIGINT or SIGTERM to stop")
                let limit = clients
                server.run { serveStop.load(ordering: .acquiring) || limit.map { server.clientsServed >= $0 } ?? false }
                note("softdev: stopped after \(server.clientsServed) client(s)")
            }
        }
    }
}

/// `--dma` in bytes: 1M to 16G.
func dmaBytes(_ text: String) throws -> Int {
    guard let bytes = parseByteSize(text), bytes >= 1 << 20, bytes <= 1 << 34 else {
        throw CLIError("--dma \(text): expected 1M to 16G")
    }
    return Int(bytes)
}

/// Opens a PCI address through kernel VFIO with `--dma` bytes of DMA memory.
func openVFIO(address: String, dma: String, noiommu: Bool) throws -> VFIOPCIFunction {
    try VFIOPCIFunction(address: address, allowNoIOMMU: noiommu, dmaBytes: try dmaBytes(dma))
}

/// Opens `vfio-user:PATH` for a PCI transport; doorbell writes are posted (no reply awaited).
/// Replies are awaited for the spelling's `timeout=`, else `peerTimeout`, else 5 s.
func openVFIOUser(_ spec: VFIOUserSpec, dma: String, peerTimeout: Int?, logger: Logger) throws -> PCITransport<VFIOUserFunction> {
    let timeout = spec.timeoutMilliseconds ?? peerTimeout ?? VFIOUserFunction.defaultTimeoutMilliseconds
    let f = try VFIOUserFunction(path: spec.path, dmaBytes: try dmaBytes(dma), timeoutMilliseconds: timeout)
    let t = try PCITransport(function: f, logger: logger)
    f.postedBAR = t.layout.notify.bar
    f.postedRange = t.layout.notify.offset..<(t.layout.notify.offset + t.layout.notify.length)
    return t
}
