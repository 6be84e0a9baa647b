import Foundation
import Testing

/// Runs the built `virtioctl` and returns (exit status, stdout, stderr).
func virtioctl(_ args: [String]) throws -> (Int32, String, String) {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("virtioctl")
    guard FileManager.default.isExecutableFile(atPath: exe.path) else {
        throw CLIMissing(path: exe.path)
    }
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
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
