import Foundation
import Testing

/// `virtioctl softdev serve` as its own process, reached by `vfio-user:PATH` from other invocations.
@Suite(.serialized, .leakChecked) struct SoftdevCLITests {
    @Test func serveThenInfoAndBenchOverVFIOUser() throws {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl")
        let socket = "/tmp/vu-cli-\(getpid()).sock"
        let server = Process()
        server.executableURL = exe
        server.arguments = ["softdev", "serve", "--socket", socket, "soft:blk,null=on,packed=off"]
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { server.terminate() }; server.waitUntilExit(); unlink(socket) }
        var waited = 0
        while !FileManager.default.fileExists(atPath: socket), waited < 200 { usleep(50_000); waited += 1 }

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

    /// A served device takes the same fault spelling, and `check` names the fault over vfio-user
    /// (the device thread polls, so the driver waits on a device it does not drive).
    @Test func checkNamesAServedDevicesFault() throws {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl")
        for (spec, words) in [("soft:blk", "no violations found"), ("soft:blk,fault=len_overflow", "device-writable part only")] {
            let socket = "/tmp/vu-check-\(getpid()).sock"
            let server = Process()
            server.executableURL = exe
            server.arguments = ["softdev", "serve", "--socket", socket, spec]
            server.standardError = FileHandle.nullDevice
            try server.run()
            defer { if server.isRunning { server.terminate() }; server.waitUntilExit(); unlink(socket) }
            var waited = 0
            while !FileManager.default.fileExists(atPath: socket), waited < 200 { usleep(50_000); waited += 1 }
            let (rc, out, err) = try virtioctl(["check", "vfio-user:\(socket)", "--timeout", "2000"])
            #expect(rc == (spec == "soft:blk" ? 0 : 1), "\(out)\(err)")
            #expect(out.contains(words), "\(out)")
        }
    }
}
