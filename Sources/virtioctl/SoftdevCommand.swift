import ArgumentParser
import Synchronization
import VirtioAttach
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
                abstract: "Serve a software device over vfio-user or vhost-user on a UNIX socket (one client at a time).",
                discussion: """
                    With --socket PATH (vfio-user), any verb then takes vfio-user:PATH as DEVICE, e.g. `virtioctl info vfio-user:/tmp/blk.sock`.
                    With --vhost-user PATH the device is a vhost-user backend (soft:blk only): QEMU's vhost-user-blk-pci (the guest \
                    kernel's virtio_blk), DPDK's virtio-user or `virtioctl ... vhost-user:PATH` drive it. After each frontend the driver \
                    conformance violations the device saw are printed. SIGINT/SIGTERM stops the server.
                    One client is served at a time. A client that sends no VERSION within --peer-timeout of connecting, stalls inside \
                    a message for that long, or stops taking replies for that long is dropped (the device reset, as on disconnect) \
                    and the next client is served. A client may stay idle between messages for as long as it likes.
                    """)

            @Option(help: "The UNIX socket to serve vfio-user on (replaced if it exists).") var socket: String?
            @Option(name: .customLong("vhost-user"), help: "The UNIX socket to serve vhost-user on instead (replaced if it exists).")
            var vhostUser: String?
            @Option(help: "Device type when no DEVICE is given: blk or balloon.") var type: String = "blk"
            @Argument(help: "The device, with options: soft:blk[,key=value...] or soft:balloon[,...] (default soft:<type>).")
            var device: String?
            @Option(help: "Stop after serving this many clients (default: until SIGINT/SIGTERM).") var clients: Int?
            @Flag(name: .shortAndLong, help: "Print each connection and DMA mapping to stderr.") var verbose = false
            @Option(name: .customLong("peer-timeout"), help: "The bound on a silent or stalled client, in milliseconds.")
            var peerTimeout: Int = 5_000

            func validate() throws {
                guard peerTimeoutRange.contains(peerTimeout) else { throw ValidationError("--peer-timeout must be in \(peerTimeoutRange) ms") }
                guard (socket == nil) != (vhostUser == nil) else {
                    throw ValidationError("give exactly one of --socket PATH (vfio-user) and --vhost-user PATH")
                }
            }
            @Flag(inversion: .prefixedNo, help: "Poll the queues on a device thread of its own (no doorbells needed); --no-poll serves on doorbells only.")
            var poll = true

            func run() throws {
                guard DeviceSpec.softKinds.contains(type) else {
                    throw CLIError("--type \(type): expected \(DeviceSpec.softKinds.joined(separator: " or "))")
                }
                let function = try DeviceOpening.softFunction(try DeviceSpec(parsing: device ?? "soft:\(type)"))
                signal(SIGINT) { _ in serveStop.store(true, ordering: .releasing) }
                signal(SIGTERM) { _ in serveStop.store(true, ordering: .releasing) }
                signal(SIGPIPE, SIG_IGN)
                unblockStopSignals()
                var hosting = HostingOptions()
                hosting.timeoutMilliseconds = peerTimeout
                hosting.poll = poll
                if verbose { hosting.log = { note("softdev: \($0)") } }
                hosting.warn = { note("softdev: \($0)") }
                let limit = clients
                let stop = { (served: Int) in serveStop.load(ordering: .acquiring) || limit.map { served >= $0 } ?? false }
                let served: Int
                if let path = vhostUser {
                    note("softdev: serving \(function.address) on \(path) (vhost-user backend); SIGINT or SIGTERM to stop")
                    served = try function.serveVhostUser(path: path, options: hosting, stop: stop)
                } else {
                    let path = socket ?? ""
                    note("softdev: serving \(function.address) on \(path) (vfio-user); SIGINT or SIGTERM to stop")
                    served = try function.serveVFIOUser(path: path, options: hosting, stop: stop)
                }
                note("softdev: stopped after \(served) client(s)")
            }
        }
    }
}
