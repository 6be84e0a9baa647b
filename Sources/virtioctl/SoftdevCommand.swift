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
                    With --vhost-user PATH the device is a vhost-user backend (soft:blk or soft:net): QEMU's vhost-user-blk-pci or \
                    -netdev vhost-user (the guest kernel's virtio_blk / virtio_net), DPDK's virtio-user or `virtioctl ... vhost-user:PATH` \
                    drive it. soft:net,backend=pair takes two sockets, one per end. After each frontend the driver \
                    conformance violations the device saw are printed. SIGINT/SIGTERM stops the server.
                    One client is served at a time. A client that sends no VERSION within --peer-timeout of connecting, stalls inside \
                    a message for that long, or stops taking replies for that long is dropped (the device reset, as on disconnect) \
                    and the next client is served. A client may stay idle between messages for as long as it likes.
                    """)

            @Option(help: "The UNIX socket to serve vfio-user on (replaced if it exists); twice for the two ends of soft:net,backend=pair.")
            var socket: [String] = []
            @Option(name: .customLong("vhost-user"), help: "The UNIX socket to serve vhost-user on instead (replaced if it exists); twice for soft:net,backend=pair.")
            var vhostUser: [String] = []
            @Option(help: "Device type when no DEVICE is given: blk or balloon.") var type: String = "blk"
            @Argument(help: "The device, with options: soft:blk[,key=value...] or soft:balloon[,...] (default soft:<type>).")
            var device: String?
            @Option(help: "Stop after serving this many clients (default: until SIGINT/SIGTERM).") var clients: Int?
            @Flag(name: .shortAndLong, help: "Print each connection and DMA mapping to stderr.") var verbose = false
            @Option(name: .customLong("peer-timeout"), help: "The bound on a silent or stalled client, in milliseconds.")
            var peerTimeout: Int = 5_000

            func validate() throws {
                guard peerTimeoutRange.contains(peerTimeout) else { throw ValidationError("--peer-timeout must be in \(peerTimeoutRange) ms") }
                guard socket.isEmpty != vhostUser.isEmpty else {
                    throw ValidationError("give --socket PATH (vfio-user) or --vhost-user PATH, not both")
                }
                guard Set(socket + vhostUser).count == socket.count + vhostUser.count else {
                    throw ValidationError("each end needs a socket of its own")
                }
            }
            @Flag(inversion: .prefixedNo, help: "Poll the queues on a device thread of its own (no doorbells needed); --no-poll serves on doorbells only.")
            var poll = true

            func run() throws {
                guard DeviceSpec.softKinds.contains(type) else {
                    throw CLIError("--type \(type): expected \(DeviceSpec.softKinds.joined(separator: " or "))")
                }
                let functions = try DeviceOpening.softFunctions(try DeviceSpec(parsing: device ?? "soft:\(type)"))
                let paths = vhostUser.isEmpty ? socket : vhostUser
                guard paths.count == functions.count else {
                    throw CLIError(functions.count == 2
                        ? "soft:net,backend=pair has two ends: give two sockets (--vhost-user A --vhost-user B, or --socket A --socket B)"
                        : "\(functions[0].address) is one function: give one socket (\(paths.count) given)")
                }
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
                let stop = { @Sendable (served: Int) in serveStop.load(ordering: .acquiring) || limit.map { served >= $0 } ?? false }
                let kind = vhostUser.isEmpty ? "vfio-user" : "vhost-user backend"
                for (f, p) in zip(functions, paths) { note("softdev: serving \(f.address) on \(p) (\(kind)); SIGINT or SIGTERM to stop") }
                let served = try SoftServing.serve(functions, paths: paths, vhostUser: !vhostUser.isEmpty, options: hosting, stop: stop)
                note("softdev: stopped after \(served.map(String.init).joined(separator: " + ")) client(s)")
            }
        }
    }
}
