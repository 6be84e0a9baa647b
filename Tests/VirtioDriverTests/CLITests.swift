import Foundation
import Testing

/// Runs the built `virtioctl` and returns (exit status, stdout, stderr).
func virtioctl(_ args: [String]) throws -> (Int32, String, String) {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("virtioctl")
    guard FileManager.default.isExecutableFile(atPath: exe.path) else {
        throw CLIMissing(path: exe.path)
    }
    return try runCaptured(exe, args)
}

/// Runs a program with stdout and stderr in files, not pipes (a daemon it starts, such as a tmux
/// server, inherits them and would hold a pipe open), with the signal mask cleared (Foundation's
/// Process leaves SIGTERM blocked in children), reaped by waitpid here rather than by Foundation's
/// SIGCHLD monitor (which left a tmux client unreaped), and killed after `seconds`.
func runCaptured(_ exe: URL, _ args: [String], input: String? = nil, seconds: Double = 120) throws -> (Int32, String, String) {
    let base = NSTemporaryDirectory() + "run-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try Data((input ?? "").utf8).write(to: URL(fileURLWithPath: base + ".in"))
    defer { for s in [".in", ".out", ".err"] { try? FileManager.default.removeItem(atPath: base + s) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, base + ".in", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var none = sigset_t(), stops = sigset_t()
    sigemptyset(&none)
    sigemptyset(&stops)
    for s in [SIGINT, SIGTERM, SIGPIPE, SIGCHLD] { sigaddset(&stops, s) }
    posix_spawnattr_setsigmask(&attr, &none)
    posix_spawnattr_setsigdefault(&attr, &stops)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv = ([exe.path] + args).map { strdup($0) }
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, exe.path, &actions, &attr, argv + [nil], environ)
    guard rc == 0 else { throw CLIMissing(path: "\(exe.path): \(String(cString: strerror(rc)))") }
    let end = Date().addingTimeInterval(seconds)
    var status: Int32 = 0
    var overdue = false
    while true {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { break }
        guard r == 0 || errno == EINTR else { throw CLIMissing(path: "waitpid \(pid): \(String(cString: strerror(errno)))") }
        if !overdue, Date() >= end { overdue = true; kill(pid, SIGKILL) }
        usleep(5_000)
    }
    let o = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
    var e = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
    if overdue { e += "\n(killed after \(Int(seconds)) s)" }
    // Exit status, or 128 + the signal that ended it, as a shell reports it.
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, o, e)
}

/// Starts `virtioctl attach ARGS --stats-file REGION` in the background and waits (20 s) for its region.
func startAttach(_ args: [String], region: String) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("virtioctl")
    p.arguments = ["attach"] + args + ["--stats-file", region]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    let end = Date().addingTimeInterval(20)
    while !FileManager.default.fileExists(atPath: region) {
        guard Date() < end, p.isRunning else { throw CLIMissing(path: "attach never created \(region)") }
        usleep(20_000)
    }
    return p
}

/// Ends a process we started, by its PID: SIGTERM, then SIGKILL if it is still there after
/// `seconds` (a child of Foundation's Process may have SIGTERM blocked).
func endByPID(_ p: Process, seconds: Double = 10) {
    guard p.isRunning else { return p.waitUntilExit() }
    kill(p.processIdentifier, SIGTERM)
    let end = Date().addingTimeInterval(seconds)
    while p.isRunning, Date() < end { usleep(10_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
}

struct CLIMissing: Error, CustomStringConvertible {
    let path: String
    var description: String { "virtioctl is not built at \(path) (swift build builds it)" }
}

/// Bad input gets a clear message on stderr, a non-zero exit, and nothing written.
@Suite(.serialized, .leakChecked) final class CLITests {
    let image: String
    init() throws {
        image = NSTemporaryDirectory() + "virtioctl-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
        // A 1 MiB disk whose bytes are all 0x5A: any write would show.
        _ = FileManager.default.createFile(atPath: image, contents: Data(repeating: 0x5A, count: 1 << 20))
    }

    deinit { unlink(image) }

    func imageUnchanged() -> Bool {
        (FileManager.default.contents(atPath: image) ?? Data()) == Data(repeating: 0x5A, count: 1 << 20)
    }

    @Test func unknownDeviceSpelling() throws {
        for (device, message) in [("bogus", "cannot read device 'bogus'"), ("soft:gpu", "unknown software device 'gpu'"),
                                  ("soft:blk,colour=red", "unknown key 'colour'"), ("soft:blk,size=1000", "not a multiple"),
                                  ("soft:blk,packed=maybe", "packed=maybe: expected on or off"),
                                  ("00:1f.9", "cannot read device"),
                                  ("soft:blk,packed=off,queue_size=100", "need a power of two")] {
            let (status, out, err) = try virtioctl(["info", device])
            #expect(status != 0, "\(device) exited 0")
            #expect(err.contains(message), "\(device): stderr was \(err)")
            #expect(out.isEmpty)
        }
    }

    @Test func pciAndVfioUserSpellingsAreUnderstood() throws {
        let (s1, _, e1) = try virtioctl(["info", "0000:7f:1f.7"])
        #expect(s1 != 0 && e1.contains("0000:7f:1f.7: no such PCI device"), "stderr: \(e1)")
        let (s3, _, e3) = try virtioctl(["info", "7f:1f.7"])  // the short spelling gets domain 0000
        #expect(s3 != 0 && e3.contains("0000:7f:1f.7"))
        let (s2, _, e2) = try virtioctl(["info", "vfio-user:/tmp/x.sock"])
        #expect(s2 != 0 && e2.contains("vfio-user"))
    }

    @Test func unknownFeatureName() throws {
        let (status, _, err) = try virtioctl(["info", "soft:blk", "--feature-off", "RING_PACKD"])
        #expect(status != 0)
        #expect(err.contains("unknown feature 'RING_PACKD'") && err.contains("RING_PACKED"))
    }

    @Test func lbaPastTheEndWritesNothing() throws {
        let (status, _, err) = try virtioctl(["blk", "write", "soft:blk,file=\(image)", "--lba", "2048", "--pattern", "0xAA"])
        #expect(status != 0)
        #expect(err.contains("past the end of the device"), "stderr: \(err)")
        #expect(imageUnchanged())
        let (s2, _, e2) = try virtioctl(["blk", "read", "soft:blk,file=\(image)", "--lba", "2040", "--blocks", "9"])
        #expect(s2 != 0 && e2.contains("past the end"))
    }

    @Test func oddSizesWriteNothing() throws {
        let odd = image + ".in"
        _ = FileManager.default.createFile(atPath: odd, contents: Data(repeating: 1, count: 1000))
        defer { unlink(odd) }
        let (status, _, err) = try virtioctl(["blk", "write", "soft:blk,file=\(image)", "--in", odd])
        #expect(status != 0)
        #expect(err.contains("not a multiple of the 512-byte block size"), "stderr: \(err)")
        let (s2, _, e2) = try virtioctl(["blk", "bench", "soft:blk,file=\(image)", "--block-size", "1000"])
        #expect(s2 != 0 && e2.contains("--block-size"))
        #expect(imageUnchanged())
    }

    @Test func infoJSONNamesFeatures() throws {
        let (status, out, _) = try virtioctl(["info", "soft:blk,packed=off", "-o", "json"])
        #expect(status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        let offered = (json["offered"] as! [[String: Any]]).map { $0["name"] as! String }
        let negotiated = (json["negotiated"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(offered.contains("VIRTIO_F_IN_ORDER") && !offered.contains("VIRTIO_F_RING_PACKED"))
        #expect(negotiated.contains("VIRTIO_F_VERSION_1") && !negotiated.contains("VIRTIO_F_RING_PACKED"))
        let (_, packedOut, _) = try virtioctl(["info", "soft:blk", "-o", "json"])
        #expect(packedOut.contains("\"VIRTIO_F_RING_PACKED\""))
    }

    @Test func writeThenReadThroughAFile() throws {
        let (s1, _, _) = try virtioctl(["blk", "write", "soft:blk,file=\(image)", "--lba", "3", "--blocks", "2", "--pattern", "0xC3"])
        #expect(s1 == 0)
        let (s2, out, _) = try virtioctl(["blk", "read", "soft:blk,file=\(image)", "--lba", "3", "-o", "json"])
        #expect(s2 == 0)
        #expect(out.contains(String(repeating: "c3", count: 512)))
        let disk = FileManager.default.contents(atPath: image)!
        #expect(disk[3 * 512..<5 * 512].allSatisfy { $0 == 0xC3 } && disk[5 * 512] == 0x5A)
    }

    /// `ring-demo -o json` and `ring-bench --json` come from the JSON encoder (they were hand-built strings).
    @Test func ringToolsPrintEncodedJSON() throws {
        let (rc, out, err) = try virtioctl(["ring-demo", "-o", "json", "--buffers", "300", "--layout", "split"])
        #expect(rc == 0, "\(err)")
        struct Demo: Decodable { let negotiated: [String]; let layout: String; let queue_size: Int; let buffers: Int; let verified: Int }
        let d = try JSONDecoder().decode(Demo.self, from: Data(out.utf8))
        #expect(d.layout == "split" && d.buffers == 300 && d.verified == 300 && !d.negotiated.contains("RING_PACKED"))
        let bench = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ring-bench")
        let p = Process()
        p.executableURL = bench
        p.arguments = ["--json", "--buffers", "1000", "--rounds", "1", "--layouts", "packed,split"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        struct Layout: Decodable { let swift_over_c: Double; let allocations_per_buffer: Double; let ratios: [Double]; let buffers: Int }
        struct Bench: Decodable { let queue_size: Int; let layouts: [String: Layout] }
        let b = try JSONDecoder().decode(Bench.self, from: data)
        #expect(b.queue_size == 256 && Set(b.layouts.keys) == ["packed", "split"])
        #expect(b.layouts["split"]?.buffers == 1000 && b.layouts["split"]?.ratios.count == 1)
    }
}
