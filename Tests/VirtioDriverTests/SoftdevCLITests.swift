import Foundation
import Testing
import VFIOUser
import VirtioDrivers
import VirtioPCI

/// `virtioctl softdev serve` as its own process, reached by `vfio-user:PATH` from other invocations.
@Suite(.serialized, .leakChecked) struct SoftdevCLITests {
    @Test func serveThenInfoAndBenchOverVFIOUser() throws {
        let socket = "/tmp/vu-cli-\(getpid()).sock"
        let server = try startSoftdev(["--socket", socket, "soft:blk,null=on,packed=off"], stderr: FileHandle.nullDevice)
        defer { if server.isRunning { server.terminate() }; server.waitUntilExit(); unlink(socket) }

        let (rc, out, err) = try virtioctl(["info", "vfio-user:\(socket)", "-o", "json"])
        #expect(rc == 0, "\(err)")
        struct Info: Decodable { struct F: Decodable { let name: String }; let device: String; let negotiated: [F]; let transport: [String: String] }
        let info = try JSONDecoder().decode(Info.self, from: Data(out.utf8))
        #expect(info.device == "vfio-user:\(socket)")
        #expect(!info.negotiated.contains { $0.name == "VIRTIO_F_RING_PACKED" }, "packed=off on the server")
        #expect(info.transport["backend"]?.hasPrefix("vfio-user") == true)

        let (brc, bout, berr) = try virtioctl(["blk", "bench", "vfio-user:\(socket)", "--duration", "1", "--depth", "8", "--quiet", "-o", "json"])
        #expect(brc == 0, "\(berr)")
        struct Bench: Decodable { let requests: Int; let errors: Int }
        let b = try JSONDecoder().decode(Bench.self, from: Data(bout.utf8))
        #expect(b.requests > 0 && b.errors == 0)

        // A second server on the same socket while the first lives: the first keeps it (or says why).
        let (src, _, serr) = try virtioctl(["softdev", "serve", "--socket", socket, "--type", "frog"])
        #expect(src != 0 && serr.contains("--type frog"))
        server.terminate()
        server.waitUntilExit()
        #expect(server.terminationStatus == 0)
        let (drc, _, derr) = try virtioctl(["info", "vfio-user:\(socket)"])
        #expect(drc != 0 && derr.contains("cannot connect to vfio-user server"), "\(derr)")
    }

    /// With `--no-poll` the server learns of requests only from doorbells (posted REGION_WRITEs, built
    /// on the stack): requests complete, so the bytes are right, and none costs a heap allocation.
    @Test func doorbellsOverVFIOUserAllocateNothing() throws {
        let socket = "/tmp/vu-bell-\(getpid()).sock"
        let server = try startSoftdev(["--socket", socket, "--no-poll", "soft:blk,null=on"], stderr: FileHandle.nullDevice)
        defer { if server.isRunning { server.terminate() }; server.waitUntilExit(); unlink(socket) }
        let (rc, out, err) = try virtioctl(["blk", "bench", "vfio-user:\(socket)", "--duration", "1", "--depth", "8", "--quiet", "-o", "json"])
        #expect(rc == 0, "\(err)")
        struct Bench: Decodable { let requests: Int; let errors: Int; let allocations_per_request: Double }
        let b = try JSONDecoder().decode(Bench.self, from: Data(out.utf8))
        #expect(b.requests > 0 && b.errors == 0)
        #expect(b.allocations_per_request == 0, "was 0.19-0.63 when each doorbell built its message in arrays")
    }

    /// A served device takes the same fault spelling, and `check` names the fault over vfio-user
    /// (the device thread polls, so the driver waits on a device it does not drive).
    @Test func checkNamesAServedDevicesFault() throws {
        for (spec, words) in [("soft:blk", "no violations found"), ("soft:blk,fault=len_overflow", "device-writable part only")] {
            let socket = "/tmp/vu-check-\(getpid()).sock"
            let server = try startSoftdev(["--socket", socket, spec], stderr: FileHandle.nullDevice)
            defer { if server.isRunning { server.terminate() }; server.waitUntilExit(); unlink(socket) }
            let (rc, out, err) = try virtioctl(["check", "vfio-user:\(socket)", "--timeout", "2000"])
            #expect(rc == (spec == "soft:blk" ? 0 : 1), "\(out)\(err)")
            #expect(out.contains(words), "\(out)")
        }
    }

    /// A client that connects and says nothing, or stalls inside a message, is dropped after
    /// --peer-timeout (the device reset) and the next client is served.
    @Test func aStalledClientIsDroppedAndTheNextServed() throws {
        let socket = "/tmp/vu-drop-\(getpid()).sock"
        let log = Pipe()
        let server = try startSoftdev(["--socket", socket, "--peer-timeout", "500", "soft:blk,null=on"], stderr: log)
        defer { if server.isRunning { server.terminate() }; server.waitUntilExit(); unlink(socket) }
        // Silent, half a header, and VERSION then half a message.
        let version = VFIOUserMessage(id: 1, command: .version, payload: VFIOUserPayload.version(major: 0, minor: 1, json: "{}")).bytes
        let info = VFIOUserMessage(id: 2, command: .deviceGetInfo, payload: VFIOUserPayload.deviceInfo(flags: 0, regions: 0, irqs: 0)).bytes
        for (name, bytes) in [("silent", [UInt8]()), ("half header", Array(version.prefix(5))), ("mid message", version + info.prefix(20))] {
            let stalled = try VFIOUserConnection.connect(path: socket)
            _ = bytes.withUnsafeBytes { send(stalled.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            let start = Date()
            let (rc, out, err) = try virtioctl(["info", "vfio-user:\(socket)", "--peer-timeout", "3000"])
            #expect(rc == 0 && out.contains("(virtio blk)"), "\(name): \(err)")
            #expect(Date().timeIntervalSince(start) >= 0.3, "\(name): served only once the stalled client was dropped")
            // The stalled client's connection was closed by the server.
            var byte: UInt8 = 0
            var p = pollfd(fd: stalled.fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 1000)
            let n = ready == 1 ? recv(stalled.fd, &byte, 1, Int32(MSG_DONTWAIT)) : -1
            #expect(n == 0 || (name == "mid message" && n > 0), "\(name): the server dropped the stalled client")
            stalled.close()
        }
        server.terminate()
        server.waitUntilExit()
        let text = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("sent no VERSION within 500 ms; dropped"), "\(text)")
        #expect(text.contains("stalled after 5 bytes of a 16-byte message header; dropped"), "\(text)")
        #expect(text.contains("stalled after 20 of the message's 32 bytes; dropped"), "\(text)")
    }

    /// A server stopped in a debugger (SIGSTOP): the next call that waits on it fails within the bound.
    @Test func aStoppedServerFailsCallsWithinTheBound() throws {
        let socket = "/tmp/vu-stop-\(getpid()).sock"
        let server = try startSoftdev(["--socket", socket], stderr: FileHandle.nullDevice)
        defer {
            kill(server.processIdentifier, SIGCONT)
            if server.isRunning { server.terminate() }
            server.waitUntilExit()
            unlink(socket)
        }
        let f = try VFIOUserFunction(path: socket, dmaBytes: 8 << 20, timeoutMilliseconds: 500)
        let blk = try BlockDevice(transport: try PCITransport(function: f))
        let b = try blk.allocateBuffer(bytes: 4096)
        try blk.read(sector: 0, into: b)
        kill(server.processIdentifier, SIGSTOP)
        // The stop is asynchronous: wait until the kernel shows the process stopped ('T' in /proc/PID/stat).
        func stopped() -> Bool {
            let stat = (try? String(contentsOfFile: "/proc/\(server.processIdentifier)/stat", encoding: .utf8)) ?? ""
            return stat.split(separator: ")").last?.split(separator: " ").first == "T"
        }
        var waited = 0
        while !stopped(), waited < 1000 { usleep(1000); waited += 1 }
        #expect(stopped(), "the server process stopped")
        let start = Date()
        do {
            try blk.read(sector: 8, into: b)
            Issue.record("a read from a stopped server succeeded")
        } catch {
            #expect("\(error)".contains(socket), "\(error)")
        }
        #expect(Date().timeIntervalSince(start) < 1.5)
        #expect(!f.isConnected)
    }

    /// `virtioctl softdev serve ARGS` (ARGS name `--socket PATH`), once its socket exists.
    func startSoftdev(_ args: [String], stderr: Any) throws -> Process {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("virtioctl")
        server.arguments = ["softdev", "serve"] + args
        server.standardError = stderr
        try server.run()
        let socket = args[args.firstIndex(of: "--socket")! + 1]
        var waited = 0
        while !FileManager.default.fileExists(atPath: socket), waited < 200, server.isRunning { usleep(50_000); waited += 1 }
        return server
    }
}
