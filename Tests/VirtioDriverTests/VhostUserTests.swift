import CMallocCount
import Foundation
import HostIO
import Synchronization
import Testing
import VhostUser
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice
import VirtioWire

/// A software function served as a vhost-user backend on a thread of this process.
final class ServedVhostDevice: @unchecked Sendable {
    let backend: VhostUserBackend<SoftPCIFunction<SoftBlock>>
    let stop = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)
    let path: String
    let refusals = Mutex<[String]>([])
    /// The backend thread's own heap allocations so far (sampled each time its loop turns).
    let backendAllocations = Atomic<UInt64>(0)
    var device: SoftPCIFunction<SoftBlock> { backend.device }

    /// The device's polling thread when it polls (kicks are then drained, not served).
    private var poller: SoftPoller?
    /// That thread's heap allocations so far (sampled after each round over the queues).
    let pollerAllocations = Atomic<UInt64>(0)

    init(_ device: SoftPCIFunction<SoftBlock>, timeoutMilliseconds: Int = 5_000, devicePolls: Bool = false) throws {
        path = "/tmp/vhu-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        backend = try VhostUserBackend(path: path, device: device)
        backend.timeoutMilliseconds = timeoutMilliseconds
        backend.devicePolls = devicePolls
        if devicePolls {
            poller = device.startPolling { [weak self] in self?.pollerAllocations.store(mc_thread_count(), ordering: .relaxed) }
        }
        backend.warn = { [weak self] w in self?.refusals.withLock { $0.append(w) } }
        let t = Thread { [self] in
            backend.run {
                backendAllocations.store(mc_thread_count(), ordering: .relaxed)
                return stop.load(ordering: .acquiring)
            }
            finished.store(true, ordering: .releasing)
        }
        t.name = "vhost-user-srv"
        t.start()
    }

    func shutdown() {
        stop.store(true, ordering: .releasing)
        while !finished.load(ordering: .acquiring) { usleep(1000) }
        poller?.stop()
    }

    func frontend(timeout: Int = 5_000, dma: Int = 16 << 20) throws -> VhostUserFrontend {
        var o = VhostUserFrontendOptions(path: path)
        o.timeoutMilliseconds = timeout
        o.dmaBytes = dma
        return try VhostUserFrontend(o)
    }

    /// Waits (bounded) until the backend has seen `n` frontends leave.
    func waitForWarnings(_ n: Int) {
        for _ in 0..<2000 where refusals.withLock({ $0.count }) < n { usleep(1000) }
    }
}

/// Writes 64 chunks and reads them back on every queue; the data is in the device's disk.
func verifiedIO<T>(_ blk: BlockDevice<T>, device: SoftPCIFunction<SoftBlock>) throws {
    let w = try blk.allocateBuffer(bytes: 16 * 512), r = try blk.allocateBuffer(bytes: 16 * 512)
    for i in 0..<64 {
        fill(w, lba: UInt64(i * 16), gen: UInt64(i + 1))
        _ = try blk.perform(.write, sector: UInt64(i * 16), data: BufferElement(address: w.deviceAddress, length: UInt32(w.length)),
                            queue: i % blk.queueCount)
    }
    for i in 0..<64 {
        _ = try blk.perform(.read, sector: UInt64(i * 16), data: BufferElement(address: r.deviceAddress, length: UInt32(r.length)),
                            queue: (i + 1) % blk.queueCount)
        #expect(bytes(r) == patternBytes(lba: UInt64(i * 16), gen: UInt64(i + 1), length: 16 * 512), "chunk \(i)")
    }
    #expect(device.personality.peek(offset: 0, length: 512) == patternBytes(lba: 0, gen: 1, length: 512))
}

@Suite(.serialized, .leakChecked) struct VhostUserTests {
    @Test func messageCodecsRoundTrip() throws {
        #expect(VhostUserRequest.allCases.count == 40 && VhostUserRequest.allCases.allSatisfy { !$0.specName.isEmpty })
        #expect(VhostUserRequest.getVringBase.specName == "GET_VRING_BASE" && VhostUserRequest.getStatus.specName == "GET_STATUS")
        let m = VhostUserMessage(.setVringNum, needReply: true, payload: VringState(index: 3, num: 256).encoded)
        #expect(m.bytes == [8, 0, 0, 0, 0x9, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0, 1, 0, 0])
        #expect(VhostUserMessage.reply(to: 11, payload: []).flags == 0x5 && VhostUserMessage.payloadSize(header: m.bytes) == 8)
        #expect(try VringState(decoding: VringState(index: 1, num: 0x8003).encoded, "x") == VringState(index: 1, num: 0x8003))
        let a = VringAddress(index: 2, descriptors: 0x1000, used: 0x3000, avail: 0x2000)
        let a2 = try VringAddress(decoding: a.encoded)
        #expect(a.encoded.count == 40 && a2 == a && LEReader(a.encoded).u64(16) == 0x3000)
        #expect(try VringFile(decoding: VringFile(index: 7, noFD: true).encoded, "x") == VringFile(index: 7, noFD: true))
        #expect(VringFile(index: 7, noFD: true).encoded == [7, 1, 0, 0, 0, 0, 0, 0])
        #expect(throws: VhostUserDecodeError.self) { try VringFile(decoding: VhostUserU64.encode(0x200), "SET_VRING_KICK") }
        let t = VhostMemoryTable(regions: [VhostMemoryRegion(guestAddress: 0x4000_0000, size: 1 << 20, userAddress: 0x7f00_0000_0000, mmapOffset: 0),
                                           VhostMemoryRegion(guestAddress: 0, size: 4096, userAddress: 1, mmapOffset: 8192)])
        let t2 = try VhostMemoryTable(decoding: t.encoded)
        #expect(t.encoded.count == 8 + 64 && t2 == t)
        // Older frontends send all 8 region slots; both forms decode.
        #expect((try VhostMemoryTable(decoding: t.encoded + [UInt8](repeating: 0, count: 6 * 32))) == t)
        #expect(throws: VhostUserDecodeError.self) { try VhostMemoryTable(decoding: [0, 0, 0, 0, 0, 0, 0, 0]) }
        #expect(throws: VhostUserDecodeError.self) { try VhostMemoryTable(decoding: [9, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 9 * 32)) }
        #expect(throws: VhostUserDecodeError.self) { try VhostMemoryTable(decoding: Array(t.encoded.dropLast())) }
        let c = VhostConfigPayload(offset: 20, data: [1, 2, 3, 4])
        let c2 = try VhostConfigPayload(decoding: c.encoded, "x")
        #expect(c.encoded == [20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4] && c2 == c)
        var big = VhostConfigPayload(offset: 0, data: []).encoded
        big[4] = 0x01; big[5] = 0x01  // size 257
        #expect(throws: VhostUserDecodeError.self) { try VhostConfigPayload(decoding: big, "GET_CONFIG") }
        #expect(throws: VhostUserDecodeError.self) { try VringState(decoding: [1, 2, 3], "SET_VRING_NUM") }
        #expect(try VhostUserU64.decode(VhostUserU64.encode(0x175007e46), "x") == 0x175007e46)
    }

    @Test(arguments: ["packed=on,in_order=on", "packed=on,in_order=off", "packed=off,in_order=on", "packed=off,in_order=off"], [1, 4])
    func verifiedBlockIOOverVhostUser(rings: String, queues: Int) throws {
        let served = try ServedVhostDevice(try softBlock("size=4M,queues=\(queues)," + rings))
        defer { served.shutdown() }
        let blk = try BlockDevice(transport: try served.frontend())
        #expect(blk.negotiated.contains(VirtioFeature.ringPacked) == rings.hasPrefix("packed=on"))
        #expect(blk.negotiated.contains(VirtioFeature.inOrder) == rings.hasSuffix("in_order=on"))
        #expect(blk.queueCount == queues)
        try verifiedIO(blk, device: served.device)
        #expect(served.device.log.violations.isEmpty, "\(served.device.log.violations)")
        #expect(served.refusals.withLock { $0 }.isEmpty, "\(served.refusals.withLock { $0 })")
    }

    @Test func theDeviceServesOnItsOwnPollerWithoutKicks() throws {
        let f = try softBlock("size=4M,queues=2")
        let poller = f.startPolling()
        defer { poller.stop() }
        let served = try ServedVhostDevice(f)
        served.backend.devicePolls = true
        defer { served.shutdown() }
        let blk = try BlockDevice(transport: try served.frontend())
        try verifiedIO(blk, device: f)
        // A polling device publishes "do not notify", and the driver honours it.
        #expect(f.notifications(queue: 0).count == 0)
    }

    /// Interrupt mode: each queue's call eventfd is what the driver sleeps on (vector i + 1, as over MSI-X).
    @Test func everyQueueSleepsOnItsCallEventFD() throws {
        let served = try ServedVhostDevice(try softBlock("size=4M,queues=4"))
        defer { served.shutdown() }
        var o = BlockAttachOptions()
        o.interrupts = true
        let blk = try BlockDevice(transport: try served.frontend(), options: o)
        #expect(blk.interruptMode && blk.queueCount == 4)
        try verifiedIO(blk, device: served.device)
        for q in 0..<4 {
            #expect(blk.withQueue(q) { $0.interruptFD } >= 0, "queue \(q) has a call eventfd")
            #expect(served.device.interrupts(queue: q) > 0, "queue \(q) was signalled")
        }
    }

    /// The request path allocates nothing on either side: the driver's submit / kick / poll (this
    /// thread's count) and the backend serving the kicks (its thread's count, sampled as its loop turns).
    @Test(arguments: ["packed=on,in_order=on", "packed=off,in_order=off"])
    func neitherSideAllocatesPerRequest(spec: String) throws {
        let served = try ServedVhostDevice(try softBlock("size=4M," + spec))
        defer { served.shutdown() }
        let blk = try BlockDevice(transport: try served.frontend())
        var backendBefore: UInt64 = 0
        let (driverAllocs, requests) = try countRequestAllocations(blk) {
            backendBefore = served.backendAllocations.load(ordering: .relaxed)
        }
        let backendAllocs = served.backendAllocations.load(ordering: .relaxed) - backendBefore
        #expect(driverAllocs == 0, "the driver allocated \(driverAllocs) times in \(requests) requests")
        #expect(backendAllocs == 0, "the backend allocated \(backendAllocs) times in \(requests) requests")
    }

    /// In poll mode the device's thread finds the requests itself and the backend only drains kicks:
    /// neither the driver nor the polling thread allocates per request.
    @Test(arguments: ["packed=on,in_order=on", "packed=off,in_order=off"])
    func aPollingBackendAllocatesNothingPerRequest(spec: String) throws {
        let served = try ServedVhostDevice(try softBlock("size=4M," + spec), devicePolls: true)
        defer { served.shutdown() }
        let blk = try BlockDevice(transport: try served.frontend())
        var pollerBefore: UInt64 = 0, backendBefore: UInt64 = 0
        let (driverAllocs, requests) = try countRequestAllocations(blk) {
            pollerBefore = served.pollerAllocations.load(ordering: .relaxed)
            backendBefore = served.backendAllocations.load(ordering: .relaxed)
        }
        let pollerAllocs = served.pollerAllocations.load(ordering: .relaxed) - pollerBefore
        let backendAllocs = served.backendAllocations.load(ordering: .relaxed) - backendBefore
        #expect(pollerBefore > 0, "the polling thread ran")
        #expect(driverAllocs == 0, "the driver allocated \(driverAllocs) times in \(requests) requests")
        #expect(pollerAllocs == 0, "the polling device allocated \(pollerAllocs) times in \(requests) requests")
        #expect(backendAllocs == 0, "the backend allocated \(backendAllocs) times draining kicks for \(requests) requests")
    }

    @Test func aFrontendThatLeavesLeavesTheBackendReadyForTheNext() throws {
        let served = try ServedVhostDevice(try softBlock("size=4M"))
        defer { served.shutdown() }
        do {
            let blk = try BlockDevice(transport: try served.frontend())
            let b = try blk.allocateBuffer(bytes: 4096)
            fill(b, lba: 8, gen: 9)
            try blk.write(sector: 8, from: b)
        }
        let blk = try BlockDevice(transport: try served.frontend())
        let b = try blk.allocateBuffer(bytes: 4096)
        try blk.read(sector: 8, into: b)
        #expect(bytes(b) == patternBytes(lba: 8, gen: 9, length: 4096))
        #expect(served.backend.clientsServed == 2)
        #expect(served.device.log.violations.isEmpty, "\(served.device.log.violations)")
    }

    @Test func stopReturnsWhereTheDeviceStands() throws {
        let served = try ServedVhostDevice(try softBlock("size=4M,packed=off"))
        defer { served.shutdown() }
        let t = try served.frontend()
        let blk = try BlockDevice(transport: t)
        let b = try blk.allocateBuffer(bytes: 512)
        for i in 0..<5 { try blk.read(sector: UInt64(i), into: b) }
        try blk.device.reset()
        // GET_VRING_BASE: the device's next avail index, the number of requests it took.
        #expect(t.stoppedAt[0] == 5, "\(t.stoppedAt)")
    }

    @Test func twoProcessesSoftdevServeVhostUser() throws {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl")
        let path = "/tmp/vhu-proc-\(getpid()).sock"
        let p = Process()
        p.executableURL = exe
        p.arguments = ["softdev", "serve", "--vhost-user", path, "soft:blk,size=4M,queues=2"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            unlink(path)
        }
        var waited = 0
        while !FileManager.default.fileExists(atPath: path), waited < 200 { usleep(50_000); waited += 1 }
        var o = VhostUserFrontendOptions(path: path)
        o.timeoutMilliseconds = 2_000
        let blk = try BlockDevice(transport: try VhostUserFrontend(o))
        let w = try blk.allocateBuffer(bytes: 8192), r = try blk.allocateBuffer(bytes: 8192)
        for i in 0..<32 {
            fill(w, lba: UInt64(i * 16), gen: 3)
            _ = try blk.perform(.write, sector: UInt64(i * 16), data: BufferElement(address: w.deviceAddress, length: 8192), queue: i % 2)
            _ = try blk.perform(.read, sector: UInt64(i * 16), data: BufferElement(address: r.deviceAddress, length: 8192), queue: (i + 1) % 2)
            #expect(bytes(r) == bytes(w), "chunk \(i)")
        }
        // The backend dies: the next request fails within the driver's bound, naming the transport.
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let start = Date()
        #expect(throws: (any Error).self) { try blk.read(sector: 0, into: r) }
        #expect(Date().timeIntervalSince(start) < 3.0)
    }

    /// The device's hostile modes work behind vhost-user as over vfio-user: the driver names the
    /// rule, breaks the queue, and stops the rings; the backend serves the next frontend.
    @Test(arguments: [("packed=on,fault=used_id_range", "out of range"), ("packed=off,fault=len_overflow", "exceeds its"),
                      ("packed=on,fault=flags_lie", "inconsistent with used wrap counter"), ("packed=off,fault=dup_id", "used idx jumped|not a buffer in flight")])
    func hostileDeviceModesOverVhostUser(spec: String, words: String) throws {
        let served = try ServedVhostDevice(try softBlock("size=4M,fault_after=4," + spec))
        defer { served.shutdown() }
        var o = BlockAttachOptions()
        o.timeoutMilliseconds = 300
        let t = try served.frontend()
        var blk: BlockDevice<VhostUserFrontend>? = try BlockDevice(transport: t, options: o)
        let b = try blk!.allocateBuffer(bytes: 4096)
        var failure: (any Error)?
        var ok = 0
        for i in 0..<40 {
            do { try blk!.read(sector: UInt64(i * 8), into: b); ok += 1 } catch { failure = error; break }
        }
        let text = failure.map { "\($0)" } ?? "no error"
        // A split duplicate reads as idx moving past what is in flight, or (when the driver got the
        // first copy back already, as the device runs on its own thread here) as an id not in flight.
        #expect(words.split(separator: "|").contains { text.contains($0) } && text.contains("queue broken"), "\(spec): \(text)")
        #expect(ok >= 4, "\(spec): the requests before the fault completed")
        #expect(!served.device.hostQueueRunning(0), "\(spec): the driver's reset stopped the ring (GET_VRING_BASE)")
        // A new attach on the same connection: SET_FEATURES again revives the failed device, I/O resumes.
        blk = nil
        let again = try BlockDevice(transport: t, options: o)
        try again.read(sector: 0, into: try again.allocateBuffer(bytes: 4096))
        #expect(served.device.hostQueueRunning(0), "\(spec): running again after recovery")
    }
}
