import Foundation
import Logging
import Testing
import VirtioAttach
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice

/// Reads the serial and capacity of whatever block device was opened.
private struct Identify: BlockDeviceUser {
    func run<T: VirtioTransport>(_ device: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> (String, UInt64, Bool) {
        (try device.serial(), device.config.capacitySectors, soft != nil)
    }
}

/// Counts how often a transport reached the user (it must not when the input is bad).
private final class Reached: @unchecked Sendable { var count = 0 }
private struct Touch: TransportUser {
    let reached: Reached
    func run<T: VirtioTransport>(_ transport: T, soft: SoftFunction?) throws -> String {
        reached.count += 1
        return transport.name
    }
}

/// Device opening (`VirtioAttach`): every spelling parses to the right transport, bad ones are refused
/// with a message that says what to type, and nothing is opened for them.
@Suite struct DeviceOpeningTests {
    let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    @Test func everySpellingParses() throws {
        #expect(try DeviceSpec(parsing: "soft:blk") == .softBlock(SoftBlockOptions()))
        guard case let .softBlock(o) = try DeviceSpec(parsing: "soft:blk,size=1M,serial=abc") else { Issue.record(); return }
        #expect(o.size == 1 << 20 && o.serial == "abc")
        guard case .softBalloon = try DeviceSpec(parsing: "soft:balloon,stats_interval=50") else { Issue.record(); return }
        #expect(try DeviceSpec(parsing: "0000:00:04.0") == .pci("0000:00:04.0"))
        #expect(try DeviceSpec(parsing: "00:1F.7") == .pci("0000:00:1f.7"))
        #expect(try DeviceSpec(parsing: "vfio-user:/tmp/x.sock") == .vfioUser(VFIOUserSpec(path: "/tmp/x.sock")))
        #expect(try DeviceSpec(parsing: "vfio-user:/tmp/a,b.sock,timeout=250")
                == .vfioUser(VFIOUserSpec(path: "/tmp/a,b.sock", timeoutMilliseconds: 250)))
        #expect(try DeviceSpec(parsing: "soft:blk").isSoftware && !(try DeviceSpec(parsing: "00:04.0").isSoftware))
        var v = VhostUserSpec(path: "/tmp/a,b.sock")
        v.timeoutMilliseconds = 250
        v.maxQueueSize = 1024
        #expect(try DeviceSpec(parsing: "vhost-user:/tmp/a,b.sock,type=blk,timeout=250,queue_size=1024") == .vhostUser(v))
        #expect(try DeviceSpec(parsing: "vhost-user:/tmp/x.sock") == .vhostUser(VhostUserSpec(path: "/tmp/x.sock")))
    }

    @Test(arguments: [
        ("soft:", "unknown software device ''"),
        ("soft:nvme", "unknown software device 'nvme'"),
        ("soft:blk,bogus=1", "bogus"),
        ("soft:blk,size=12Q", "size"),
        ("vfio-user:", "needs a socket path"),
        ("vfio-user:/tmp/x,timeout=5", "timeout=5: expected milliseconds"),
        ("vfio-user:/tmp/x,colour=red", "unknown key 'colour=red'"),
        ("vhost-user:", "needs a socket path"),
        ("vhost-user:/tmp/x,type=scsi", "type=scsi: expected blk or net"),
        ("vhost-user:/tmp/x,queues=2", "queues= and mac= are for type=net"),
        ("vhost-user:/tmp/x,type=net,queues=129", "queues=129: expected 1 to 128"),
        ("vhost-user:/tmp/x,type=net,mac=01:00:00:00:00:01", "expected a unicast address"),
        ("vhost-user:/tmp/x,queue_size=0", "queue_size=0: expected 1 to 32768"),
        ("vhost-user:/tmp/x,timeout=1", "timeout=1: expected milliseconds"),
        ("vhost-user:/tmp/x,colour=red", "unknown key 'colour=red'; vhost-user keys: type=blk"),
        ("0000:00:20.0", "cannot read device"),
        ("/dev/vda", "cannot read device '/dev/vda'; expected soft:blk"),
        ("", "cannot read device ''"),
    ])
    func badSpellingsSayWhatToType(text: String, message: String) {
        do {
            _ = try DeviceSpec(parsing: text)
            Issue.record("'\(text)' parsed")
        } catch {
            #expect(error.description.contains(message), "\(text): \(error)")
        }
    }

    @Test func softBlockOpensThroughTheOnePath() throws {
        var o = OpenOptions(logger: logger)
        o.queues = 1
        let (serial, sectors, soft) = try DeviceOpening.withBlockDevice(
            try DeviceSpec(parsing: "soft:blk,size=1M,serial=opened"), options: o, Identify())
        #expect(serial == "opened" && sectors == 2048 && soft)
    }

    @Test func badOptionsOpenNothing() throws {
        // The policy is parsed before the transport is opened: a missing socket is never tried.
        var o = OpenOptions(logger: logger)
        o.featureOff = ["RING_PACKED,NO_SUCH_FEATURE"]
        let missing = try DeviceSpec(parsing: "vfio-user:/nonexistent/vfio-user.sock")
        #expect(throws: AttachError.unknownFeature(flag: "--feature-off", name: "NO_SUCH_FEATURE", deviceType: "blk",
                                                   known: FeatureNames.known(deviceType: .block))) {
            _ = try DeviceOpening.withBlockDevice(missing, options: o, Identify())
        }
        #expect(throws: AttachError.option("--dma 12: expected 1M to 16G")) { try o.setDMA("12") }
        #expect(throws: AttachError.option("--dma 32G: expected 1M to 16G")) { try o.setDMA("32G") }
    }

    @Test func unreachableDevicesFailBeforeTheVerbRuns() {
        let reached = Reached()
        let o = OpenOptions(logger: logger)
        for text in ["vfio-user:/nonexistent/vfio-user.sock", "0000:00:1f.7", "vhost-user:/nonexistent/vfio-user.sock"] {
            do {
                _ = try DeviceOpening.open(try DeviceSpec(parsing: text), options: o, Touch(reached: reached))
                Issue.record("\(text) opened")
            } catch {
                // The error names what could not be reached.
                let what = text.hasPrefix("0000") ? "0000:00:1f.7" : "/nonexistent/vfio-user.sock"
                #expect("\(error)".contains(what), "\(error)")
            }
        }
        #expect(reached.count == 0)
    }

    @Test func wrongClassAndUnservableSpellingsAreRefused() throws {
        let o = OpenOptions(logger: logger)
        do {
            _ = try DeviceOpening.withBlockDevice(try DeviceSpec(parsing: "soft:balloon"), options: o, Identify())
            Issue.record("a balloon attached as a block device")
        } catch let e as AttachError {
            guard case .wrongDeviceClass = e else { Issue.record("\(e)"); return }
            #expect(e.description.contains("virtio-balloon"))
        }
        #expect(throws: AttachError.self) { _ = try DeviceOpening.softFunction(try DeviceSpec(parsing: "0000:00:04.0")) }
        let f = try DeviceOpening.softFunction(try DeviceSpec(parsing: "soft:balloon"))
        #expect(f.address.hasPrefix("soft:balloon"))
    }

    @Test(arguments: [
        ["info", "soft:nvme"], ["check", "soft:blk,bogus=1"], ["admin", "vfio-user:", "list-query"],
        ["attach", "0000:00:20.0", "--duration", "1"], ["softdev", "serve", "--socket", "/tmp/never.sock", "0000:00:04.0"],
        ["blk", "read", "soft:blk", "--feature-off", "NOPE"], ["info", "soft:blk", "--dma", "1K"],
        ["softdev", "serve", "soft:blk"], ["softdev", "serve", "--socket", "/tmp/a.sock", "--vhost-user", "/tmp/b.sock"],
        ["softdev", "serve", "--vhost-user", "/tmp/never-vhost.sock", "soft:balloon"], ["info", "vhost-user:/tmp/x,type=gpu"],
    ])
    func everyVerbRefusesBadInputWithAMessage(args: [String]) throws {
        let (rc, _, err) = try virtioctl(args)
        #expect(rc != 0, "\(args)")
        #expect(err.contains("soft:blk") || err.contains("expected") || err.contains("unknown") || err.contains("needs")
                || err.contains("give exactly one") || err.contains("vhost-user"),
                "\(args): \(err)")
        #expect(!err.contains("Fatal error") && !err.contains("Stack dump"), "\(args): \(err)")
    }

    @Test func transportErrorsNameTheDeviceOnce() {
        let peer = TransportError("vfio-user:/tmp/blk.sock", .registerAccess(write: false, TransportCause(PCIError.io("vfio-user /tmp/blk.sock: no reply to REGION_READ within 5000 ms"))))
        #expect(peer.description.components(separatedBy: "/tmp/blk.sock").count == 2, "\(peer)")
        // The layer underneath keeps its own error value up to the printing point.
        if case let .registerAccess(_, cause) = peer.problem { #expect(cause.error is PCIError) } else { Issue.record("\(peer)") }
        let local = TransportError("0000:00:04.0", .accessWidth(8))
        #expect(local.description == "0000:00:04.0: register access width 8 (1, 2 or 4 only)")
        #expect(VirtioError.transport(local).description == local.description)
    }
}
