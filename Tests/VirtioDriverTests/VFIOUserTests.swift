import CMallocCount
import CShim
import Foundation
import Synchronization
import Testing
import VFIOUser
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice
import VirtioWire

typealias UserTransport = PCITransport<VFIOUserFunction>

/// A software function served over vfio-user on a thread of this process.
final class ServedDevice<D: VFIOUserHostedDevice>: @unchecked Sendable {
    let server: VFIOUserServer<D>
    let stop = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)
    let path: String
    /// The server thread's own heap allocations so far (sampled each time its loop turns).
    let serverAllocations = Atomic<UInt64>(0)

    init(_ device: D) throws {
        path = "/tmp/vu-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        server = try VFIOUserServer(path: path, device: device)
        let t = Thread { [self] in
            server.run {
                serverAllocations.store(mc_thread_count(), ordering: .relaxed)
                return stop.load(ordering: .acquiring)
            }
            finished.store(true, ordering: .releasing)
        }
        t.name = "vfio-user-srv"
        t.start()
    }

    func shutdown() {
        stop.store(true, ordering: .releasing)
        while !finished.load(ordering: .acquiring) { usleep(1000) }
    }

    func transport(dma: Int = 16 << 20) throws -> UserTransport {
        let f = try VFIOUserFunction(path: path, dmaBytes: dma)
        let t = try PCITransport(function: f)
        f.postedBAR = t.layout.notify.bar
        f.postedRange = t.layout.notify.offset..<(t.layout.notify.offset + t.layout.notify.length)
        return t
    }

    /// A raw connection that has done VERSION (for malformed-message tests).
    func raw() throws -> VFIOUserConnection {
        let c = try VFIOUserConnection.connect(path: path)
        try c.send(VFIOUserMessage(id: 1, command: .version, payload: VFIOUserPayload.version(major: 0, minor: 1, json: "{}")))
        _ = try c.receive()
        return c
    }
}

@Suite(.serialized, .leakChecked) struct VFIOUserTests {
    @Test func messageCodecsRoundTrip() {
        let h = VFIOUserHeader(messageID: 0x1234, command: 10, size: 40, flags: 0x21, error: 22)
        #expect(h.encoded == [0x34, 0x12, 10, 0, 40, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0])
        #expect(VFIOUserHeader(decoding: h.encoded) == h && h.isReply && h.isError && h.wantsReply)
        let v = VFIOUserPayload.version(major: 0, minor: 1, json: "{\"capabilities\":{}}")
        let pv = VFIOUserPayload.parseVersion(v)!
        #expect(v.last == 0 && pv.major == 0 && pv.minor == 1 && pv.json == "{\"capabilities\":{}}")
        let map = VFIOUserPayload.dmaMap(flags: 3, offset: 0x1000, address: 0x1_0000_0000, size: 0x200000)
        #expect(map.count == 32 && LEReader(map).u32(0) == 32 && LEReader(map).u32(4) == 3 && LEReader(map).u64(8) == 0x1000
                && LEReader(map).u64(16) == 0x1_0000_0000 && LEReader(map).u64(24) == 0x200000)
        let unmap = VFIOUserPayload.dmaUnmap(address: 5, size: 6)
        #expect(unmap.count == 24 && LEReader(unmap).u64(8) == 5 && LEReader(unmap).u64(16) == 6)
        #expect(VFIOUserPayload.deviceInfo(flags: 3, regions: 9, irqs: 5) == [16, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0])
        let ri = VFIOUserPayload.regionInfo(argsz: 32, flags: 7, index: 4, size: 0x4000, offset: 0x10000)
        #expect(ri.count == 32 && LEReader(ri).u32(8) == 4 && LEReader(ri).u64(16) == 0x4000 && LEReader(ri).u64(24) == 0x10000)
        #expect(VFIOUserPayload.irqInfo(flags: 1, index: 2, count: 8) == [16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0])
        let set = VFIOUserPayload.setIRQs(flags: 0x24, index: 2, start: 0, count: 3)
        #expect(set.count == 20 && LEReader(set).u32(4) == 0x24 && LEReader(set).u32(16) == 3)
        let rw = VFIOUserPayload.regionAccess(offset: 0x3000, region: 4, count: 2, data: [1, 0])
        #expect(rw == [0, 0x30, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 1, 0])
        #expect(VFIOUserPayload.dmaAccess(address: 1, count: 2).count == 16)
        let m = VFIOUserMessage(id: 7, command: .regionWrite, payload: rw)
        #expect(m.header.size == 34 && m.bytes.count == 34)
    }

    @Test func fileDescriptorsCrossTheSocket() throws {
        var sv: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0)
        let a = VFIOUserConnection(fd: sv[0], peer: "a"), b = VFIOUserConnection(fd: sv[1], peer: "b")
        let mem = try SharedDMAMemory(size: 8192)
        mem.base.storeBytes(of: 0xC0FFEE, as: UInt32.self)
        try a.send(VFIOUserMessage(id: 1, command: .dmaMap, payload: [1, 2, 3], fds: [mem.fd]))
        let got = try b.receive()
        #expect(got.payload == [1, 2, 3] && got.fds.count == 1)
        let p = mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, got.fds[0], 0)!
        #expect(p.load(as: UInt32.self) == 0xC0FFEE)
        p.storeBytes(of: 0xBEEF, as: UInt32.self)
        #expect(mem.base.load(as: UInt32.self) == 0xBEEF, "the same pages on both sides")
        munmap(p, 8192)
        close(got.fds[0])
    }

    @Test func registersThroughRegionReadAndWrite() throws {
        let served = try ServedDevice(try softBlock("queues=2"))
        defer { served.shutdown() }
        let t = try served.transport()
        #expect(try t.function.configRead(offset: 0, width: 2) == 0x1AF4)
        #expect(try t.function.configRead(offset: 2, width: 2) == 0x1042)
        #expect(try t.numQueues() == 2)
        #expect(t.deviceType == .block)
        let f = try t.readDeviceFeatures()
        #expect(f.contains(VirtioFeature.version1) && f == served.server.device.offeredFeatures)
        #expect(throws: PCIError.self) { _ = try t.function.configRead(offset: 4096, width: 4) }
    }

    @Test(arguments: ["packed=on,in_order=on", "packed=on,in_order=off", "packed=off,in_order=on", "packed=off,in_order=off"])
    func verifiedBlockIOOverVFIOUser(rings: String) throws {
        let served = try ServedDevice(try softBlock("size=4M," + rings))
        defer { served.shutdown() }
        let blk = try BlockDevice(transport: try served.transport())
        #expect(blk.negotiated.contains(VirtioFeature.ringPacked) == rings.hasPrefix("packed=on"))
        #expect(blk.negotiated.contains(VirtioFeature.inOrder) == rings.hasSuffix("in_order=on"))
        let w = try blk.allocateBuffer(bytes: 16 * 512), r = try blk.allocateBuffer(bytes: 16 * 512)
        for i in 0..<64 {
            fill(w, lba: UInt64(i * 16), gen: UInt64(i + 1))
            try blk.write(sector: UInt64(i * 16), from: w)
        }
        for i in 0..<64 {
            try blk.read(sector: UInt64(i * 16), into: r)
            #expect(bytes(r) == patternBytes(lba: UInt64(i * 16), gen: UInt64(i + 1), length: 16 * 512), "chunk \(i)")
        }
        // And the data is in the server's disk.
        #expect(served.server.device.personality.peek(offset: 0, length: 512) == patternBytes(lba: 0, gen: 1, length: 512))
        #expect(served.server.device.log.violations.isEmpty, "\(served.server.device.log.violations)")
    }

    /// Doorbells are posted REGION_WRITEs the server serves as they come (this device does not poll):
    /// neither the driver's submit / kick / poll nor the server's receive and request service allocates.
    @Test(arguments: ["packed=on,in_order=on", "packed=off,in_order=off"])
    func neitherSideAllocatesPerDoorbell(spec: String) throws {
        let served = try ServedDevice(try softBlock("size=4M," + spec))
        defer { served.shutdown() }
        let blk = try BlockDevice(transport: try served.transport())
        var serverBefore: UInt64 = 0
        let (driverAllocs, requests) = try countRequestAllocations(blk) {
            serverBefore = served.serverAllocations.load(ordering: .relaxed)
        }
        let serverAllocs = served.serverAllocations.load(ordering: .relaxed) - serverBefore
        #expect(driverAllocs == 0, "the driver allocated \(driverAllocs) times in \(requests) requests")
        #expect(serverAllocs == 0, "the server allocated \(serverAllocs) times in \(requests) requests")
    }

    @Test func msixInterruptsOverVFIOUser() throws {
        let served = try ServedDevice(try softBlock(""))
        defer { served.shutdown() }
        var o = BlockAttachOptions()
        o.interrupts = true
        let blk = try BlockDevice(transport: try served.transport(), options: o)
        #expect(blk.interruptMode)
        let b = try blk.allocateBuffer(bytes: 4096)
        // A completion that lands before the driver sleeps needs no interrupt, so count over many.
        var i = 0
        while blk.counters(queue: 0).interrupts == 0, i < 2000 {
            try blk.read(sector: UInt64(i % 64 * 8), into: b)
            i += 1
        }
        #expect(blk.counters(queue: 0).interrupts > 0, "completions were signalled through the eventfd passed over the socket")
    }

    @Test func adminAndStatisticsQueuesOverVFIOUser() throws {
        let owner = try ServedDevice(try softBlock("vfs=2"))
        defer { owner.shutdown() }
        let t = try owner.transport()
        let d = VirtioDevice(transport: t)
        try d.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
        let channel = try AdminChannel(device: d)
        try d.driverOK()
        #expect(try channel.listQuery(group: .sriov).opcodes == Array(0...0x11))
        try channel.setMode(member: 2, stopped: true)
        #expect(owner.server.device.admin!.members[1].isStopped)

        let balloon = try ServedDevice(try SoftPCIFunction.balloon(try SoftBalloonOptions(parsing: ["stats_interval=0"])))
        defer { balloon.shutdown() }
        let b = try BalloonDevice(transport: try balloon.transport())
        let sink = balloon.server.device.personality.stats
        for _ in 0..<20 {
            // The re-posted buffer reaches the device through a posted doorbell: wait until it holds it.
            var waited = 0
            while !sink.holding, waited < 2000 { usleep(500); waited += 1 }
            #expect(balloon.server.device.requestStatistics())
            var answered = false
            for _ in 0..<1000 where !answered { answered = try b.poll() }
            #expect(answered)
        }
        var waited = 0
        while sink.updates < 21, waited < 2000 { usleep(500); waited += 1 }
        #expect(sink.updates == 21 && balloon.server.device.personality.log.violations.isEmpty)
    }

    @Test func malformedMessagesGetErrorsAndTheServerStaysUp() throws {
        let served = try ServedDevice(try softBlock(""))
        defer { served.shutdown() }
        // Before VERSION, anything else is refused.
        let c0 = try VFIOUserConnection.connect(path: served.path)
        try c0.send(VFIOUserMessage(id: 1, command: .deviceGetInfo, payload: VFIOUserPayload.deviceInfo(flags: 0, regions: 0, irqs: 0)))
        let r0 = try c0.receive()
        #expect(r0.header.isError && r0.header.error == VFIOUserErrno.einval)
        c0.close()
        // Unknown command, short payloads, a region past the end: error replies, the connection goes on.
        let c = try served.raw()
        var bad = VFIOUserMessage(id: 2, command: .version)
        bad.header.command = 99
        try c.send(bad)
        #expect(try c.receive().header.error == VFIOUserErrno.enosys)
        try c.send(VFIOUserMessage(id: 3, command: .dmaMap, payload: [1, 2, 3]))
        #expect(try c.receive().header.error == VFIOUserErrno.einval)
        try c.send(VFIOUserMessage(id: 4, command: .regionRead, payload: VFIOUserPayload.regionAccess(offset: 1 << 20, region: 4, count: 4)))
        #expect(try c.receive().header.error == VFIOUserErrno.einval)
        try c.send(VFIOUserMessage(id: 5, command: .regionWrite, payload: VFIOUserPayload.regionAccess(offset: 0, region: 7, count: 8, data: [1])))
        #expect(try c.receive().header.error == VFIOUserErrno.einval, "count says 8, one byte follows")
        // Writes of up to 8 bytes are served in place: the reply echoes offset, region and count; a
        // write past the region is still EINVAL.
        let line = VFIOUserPayload.regionAccess(offset: 0x3C, region: VFIOUserConst.configRegion, count: 1, data: [0x0B])
        try c.send(VFIOUserMessage(id: 10, command: .regionWrite, payload: line))
        let echo = try c.receive()
        #expect(!echo.header.isError && echo.header.messageID == 10 && echo.header.command == VFIOUserCommand.regionWrite.rawValue)
        #expect(echo.header.size == 32 && echo.payload == Array(line.prefix(16)))
        try c.send(VFIOUserMessage(id: 11, command: .regionWrite, payload: VFIOUserPayload.regionAccess(offset: 1 << 20, region: 4, count: 4, data: [1, 2, 3, 4])))
        let past = try c.receive()
        #expect(past.header.error == VFIOUserErrno.einval && past.header.messageID == 11)
        // An offset past off_t, and a window past the end of the memfd it comes with (it would SIGBUS
        // the device later): refused, nothing mapped.
        let small = try SharedDMAMemory(size: 4096)
        for (offset, size) in [(UInt64.max - 4095, UInt64(4096)), (0, UInt64(1 << 20))] {
            try c.send(VFIOUserMessage(id: 8, command: .dmaMap,
                                       payload: VFIOUserPayload.dmaMap(flags: 3, offset: offset, address: 0x1_0000_0000, size: size),
                                       fds: [small.fd]))
            #expect(try c.receive().header.error == VFIOUserErrno.einval, "offset \(offset) size \(size)")
        }
        try c.send(VFIOUserMessage(id: 9, command: .regionRead, payload: VFIOUserPayload.regionAccess(offset: UInt64(Int64.max), region: 7, count: 4)))
        #expect(try c.receive().header.error == VFIOUserErrno.einval, "an offset near 2^63 is out of range, not a trap")
        try c.send(VFIOUserMessage(id: 6, command: .deviceGetInfo, payload: VFIOUserPayload.deviceInfo(flags: 0, regions: 0, irqs: 0)))
        let ok = try c.receive()
        #expect(!ok.header.isError && ok.header.messageID == 6)
        // An unframeable header (size 8, then 64 MiB): an error, then the connection ends.
        var tiny = VFIOUserHeader(messageID: 7, command: 4, size: 8).encoded
        _ = write(c.fd, &tiny, tiny.count)
        #expect(try c.receive().header.isError)
        #expect(throws: VFIOUserError.self) { _ = try c.receive() }
        let c2 = try served.raw()
        var huge = VFIOUserHeader(messageID: 1, command: 10, size: 64 << 20).encoded
        _ = write(c2.fd, &huge, huge.count)
        #expect(try c2.receive().header.isError)
        // The server is still there for the next client.
        let blk = try BlockDevice(transport: try served.transport())
        let b = try blk.allocateBuffer(bytes: 512)
        try blk.read(sector: 0, into: b)
    }

    @Test func aClientThatLeavesLeavesTheDeviceResetAndTheServerReady() throws {
        let served = try ServedDevice(try softBlock(""))
        defer { served.shutdown() }
        do {
            let t = try served.transport()
            let blk = try BlockDevice(transport: t)
            #expect(served.server.device.status == 0x0F)
            // Leave without resetting: close the socket under the driver.
            t.function.disableInterrupts()
            _ = blk
            shutdown(t.function.connectionFD, Int32(SHUT_RDWR))
        }
        var waited = 0
        while served.server.device.status != 0, waited < 2000 { usleep(1000); waited += 1 }
        #expect(served.server.device.status == 0, "reset after the client left")
        let blk = try BlockDevice(transport: try served.transport())
        #expect(blk.queueCount == 1)
        #expect(served.server.clientsServed >= 2)
    }

    @Test func aKilledServerFailsRequestsWithinASecond() throws {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl")
        let path = "/tmp/vu-kill-\(getpid()).sock"
        let p = Process()
        p.executableURL = exe
        p.arguments = ["softdev", "serve", "--socket", path]
        p.standardError = FileHandle.nullDevice
        try p.run()
        var waited = 0
        while !FileManager.default.fileExists(atPath: path), waited < 200 { usleep(50_000); waited += 1 }
        let f = try VFIOUserFunction(path: path, dmaBytes: 8 << 20)
        let blk = try BlockDevice(transport: try PCITransport(function: f))
        let b = try blk.allocateBuffer(bytes: 4096)
        try blk.read(sector: 0, into: b)
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let start = Date()
        do {
            try blk.read(sector: 8, into: b)
            Issue.record("a read from a dead server succeeded")
        } catch {
            #expect("\(error)".contains("vfio-user"), "\(error)")
        }
        #expect(Date().timeIntervalSince(start) < 1.0)
        #expect(!f.isConnected)
        unlink(path)
    }
}

/// A scripted server: answers the client's set-up, offers BAR 0 as mappable (a memfd), and
/// while a REGION_READ is pending sends its own DMA_WRITE and DMA_READ commands.
@Suite(.serialized, .leakChecked) struct VFIOUserScriptedServerTests {
    @Test func serverDMACommandsAndMappableRegions() throws {
        let path = "/tmp/vu-script-\(getpid()).sock"
        unlink(path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { for (i, b) in path.utf8.enumerated() { $0[i] = b } }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        listen(listener, 1)
        defer { close(listener); unlink(path) }
        let bar = try SharedDMAMemory(size: 4096)
        bar.base.storeBytes(of: 0xAB, toByteOffset: 0x10, as: UInt8.self)
        final class Seen: @unchecked Sendable { var dmaRead: [UInt8] = []; var outOfRange: UInt32 = 0; var failure: String? }
        let seen = Seen()
        final class Box: Sendable { let done = Atomic<Bool>(false) }
        let box = Box()
        let server = Thread {
            let c = VFIOUserConnection(fd: accept(listener, nil, nil), peer: "script")
            func reply(_ m: VFIOUserMessage, _ payload: [UInt8] = [], fds: [Int32] = []) throws {
                var r = VFIOUserMessage(id: m.header.messageID, command: .version, flags: VFIOUserHeader.reply, payload: payload, fds: fds)
                r.header.command = m.header.command
                try c.send(r)
            }
            do {
                var dmaBase: UInt64 = 0
                while true {
                    let m = try c.receive()
                    defer { for f in m.fds { close(f) } }
                    let r = LEReader(m.payload)
                    switch VFIOUserCommand(rawValue: m.header.command)! {
                    case .version: try reply(m, VFIOUserPayload.version(major: 0, minor: 1, json: "{}"))
                    case .deviceGetInfo: try reply(m, VFIOUserPayload.deviceInfo(flags: 3, regions: 9, irqs: 5))
                    case .deviceGetRegionInfo:
                        let i = r.u32(8)
                        if i == 0 {
                            try reply(m, VFIOUserPayload.regionInfo(argsz: 32, flags: 7, index: 0, size: 4096, offset: 0), fds: [bar.fd])
                        } else {
                            try reply(m, VFIOUserPayload.regionInfo(argsz: 32, flags: i == 7 ? 3 : 0, index: i, size: i == 7 ? 256 : 0, offset: 0))
                        }
                    case .dmaMap:
                        dmaBase = r.u64(16)
                        try reply(m)
                    case .regionRead:
                        // Our own commands first, then the reply.
                        try c.send(VFIOUserMessage(id: 100, command: .dmaWrite,
                                                   payload: VFIOUserPayload.dmaAccess(address: dmaBase + 0x100, count: 4, data: [0xDE, 0xAD, 0xBE, 0xEF])))
                        let w = try c.receive()
                        if !(w.header.isReply && w.header.messageID == 100 && w.payload.count == 16) { seen.failure = "DMA_WRITE reply \(w.header)" }
                        try c.send(VFIOUserMessage(id: 101, command: .dmaRead, payload: VFIOUserPayload.dmaAccess(address: dmaBase + 0x100, count: 4)))
                        seen.dmaRead = Array(try c.receive().payload.dropFirst(16))
                        try c.send(VFIOUserMessage(id: 102, command: .dmaRead, payload: VFIOUserPayload.dmaAccess(address: 0x10, count: 4)))
                        seen.outOfRange = try c.receive().header.error
                        try reply(m, VFIOUserPayload.regionAccess(offset: r.u64(0), region: 7, count: 2, data: [0xF4, 0x1A]))
                    default: try reply(m)
                    }
                }
            } catch {}
            box.done.store(true, ordering: .releasing)
        }
        server.start()
        do {
            let f = try VFIOUserFunction(path: path, dmaBytes: 1 << 20)
            #expect(try f.configRead(offset: 0, width: 2) == 0x1AF4)
            let memory = try #require(f.dma as? SharedDMAMemory)
            #expect(memory.base.advanced(by: 0x100).loadUnaligned(as: UInt32.self) == 0xEFBE_ADDE, "the server's DMA_WRITE landed")
            #expect(seen.dmaRead == [0xDE, 0xAD, 0xBE, 0xEF] && seen.failure == nil)
            #expect(seen.outOfRange == VFIOUserErrno.efault, "a DMA_READ outside the window is refused")
            // BAR 0 is mapped: reads and writes go straight to the shared pages.
            #expect(f.bar(0)?.mapped != nil)
            #expect(try f.barRead(0, offset: 0x10, width: 1) == 0xAB)
            try f.barWrite(0, offset: 0x20, width: 4, value: 0x1234_5678)
            #expect(bar.base.load(fromByteOffset: 0x20, as: UInt32.self) == 0x1234_5678)
        }
        var waited = 0
        while !box.done.load(ordering: .acquiring), waited < 2000 { usleep(1000); waited += 1 }
    }
}
