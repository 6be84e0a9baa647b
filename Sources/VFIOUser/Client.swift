import CShim
import Synchronization
import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// A PCI function reached over vfio-user (`vfio-user:/path/to.sock`): configuration space and
/// BARs through REGION_READ/WRITE, DMA memory shared by memfd, MSI-X through eventfds passed
/// with DEVICE_SET_IRQS. Doorbell writes are posted (no reply). If the server dies, every call
/// fails with an error naming it (register reads included, so waiting drivers notice at once);
/// a server that does not answer within `timeoutMilliseconds` is taken for gone the same way.
public final class VFIOUserFunction: PCIFunction, @unchecked Sendable {
    public let address: String
    let conn: VFIOUserConnection
    let lock = Mutex<UInt16>(0)  // message ids; held across each request and its reply
    let memory: SharedDMAMemory
    let regionSizes: [Int]
    /// BARs the server offered as mappable, mapped here.
    let mapped: [UnsafeMutableRawPointer?]
    let dead = Atomic<Bool>(false)
    private var interruptFDs: EventFDSet?
    public let serverCapabilities: String
    /// How long any command may wait for its reply (and a message for the rest of its bytes).
    public let timeoutMilliseconds: Int
    /// The default bound, as QEMU's vfio-user client has one.
    public static let defaultTimeoutMilliseconds = 5_000

    public init(path: String, dmaBytes: Int, timeoutMilliseconds: Int = VFIOUserFunction.defaultTimeoutMilliseconds) throws(VFIOUserError) {
        address = "vfio-user:\(path)"
        guard (1...86_400_000).contains(timeoutMilliseconds) else { throw .io("timeout \(timeoutMilliseconds) ms: expected 1 ms to 1 day") }
        self.timeoutMilliseconds = timeoutMilliseconds
        conn = try VFIOUserConnection.connect(path: path, timeoutMilliseconds: timeoutMilliseconds)
        conn.sendTimeoutMilliseconds = timeoutMilliseconds
        do { memory = try SharedDMAMemory(size: dmaBytes) } catch { throw .io("DMA memory: \(error)") }
        var sizes = [Int](repeating: 0, count: Int(VFIOUserConst.numRegions))
        var maps = [UnsafeMutableRawPointer?](repeating: nil, count: 6)
        var started = false
        // A failure before the function is whole (deinit does not run) must not leave BARs mapped.
        defer { if !started { for (i, p) in maps.enumerated() { if let p { munmap(p, sizes[i]) } } } }
        var caps = ""
        // VERSION first: major 0, our capabilities.
        let json = "{\"capabilities\":{\"max_msg_fds\":\(CSHIM_MAX_FDS),\"max_data_xfer_size\":\(VFIOUserConst.maxDataTransfer)}}"
        let v = try Self.request(conn, lock, dead, timeoutMilliseconds, .version, VFIOUserPayload.version(major: 0, minor: 1, json: json))
        guard let parsed = VFIOUserPayload.parseVersion(v.payload), parsed.major == 0, parsed.minor <= 1 else {
            throw .protocolError("the server answered VERSION with an unsupported version")
        }
        caps = parsed.json
        let info = LEReader(try Self.request(conn, lock, dead, timeoutMilliseconds, .deviceGetInfo, VFIOUserPayload.deviceInfo(flags: 0, regions: 0, irqs: 0)).payload)
        guard info.u32(4) & VFIOUserConst.devicePCI != 0, info.u32(8) >= VFIOUserConst.numRegions else {
            throw .protocolError("the server's device is not a PCI device with \(VFIOUserConst.numRegions) regions")
        }
        for index in 0..<Int(VFIOUserConst.numRegions) where index < 6 || index == Int(VFIOUserConst.configRegion) {
            let r = try Self.request(conn, lock, dead, timeoutMilliseconds, .deviceGetRegionInfo,
                                     VFIOUserPayload.regionInfo(argsz: 32, flags: 0, index: UInt32(index), size: 0, offset: 0))
            let info = LEReader(r.payload)
            // The server's word: a size no BAR or config space can have is refused, not trapped on.
            guard info.u64(16) <= 1 << 40 else {
                for fd in r.fds { close(fd) }
                throw .protocolError("region \(index) size \(info.u64(16)) is not a size a PCI region can have")
            }
            sizes[index] = Int(info.u64(16))
            // A mappable BAR (MMAP flag, one fd): map it whole; accesses then go straight to memory.
            if index < 6, info.u32(4) & VFIOUserConst.regionMmap != 0, let fd = r.fds.first, sizes[index] > 0 {
                let prot = (info.u32(4) & VFIOUserConst.regionRead != 0 ? PROT_READ : 0) | (info.u32(4) & VFIOUserConst.regionWrite != 0 ? PROT_WRITE : 0)
                // The offset is the server's u64: one past off_t's range is refused, not trapped on.
                if info.u64(24) <= UInt64(Int64.max),
                   let p = mmap(nil, sizes[index], prot, MAP_SHARED, fd, off_t(info.u64(24))), p != MAP_FAILED {
                    maps[index] = p
                }
            }
            for fd in r.fds { close(fd) }
        }
        regionSizes = sizes
        mapped = maps
        started = true  // every property is set: from here a failure runs deinit, which unmaps them
        serverCapabilities = caps
        // All DMA memory in one window the server maps from our memfd.
        _ = try Self.request(conn, lock, dead, timeoutMilliseconds, .dmaMap,
                             VFIOUserPayload.dmaMap(flags: VFIOUserConst.dmaRead | VFIOUserConst.dmaWrite, offset: 0,
                                                    address: memory.deviceBase, size: UInt64(memory.size)),
                             fds: [memory.fd])
    }

    deinit {
        disableInterrupts()
        for (i, p) in mapped.enumerated() { if let p { munmap(p, regionSizes[i]) } }
    }

    /// One command and its reply (an error reply throws); serialised with the lock. The reply,
    /// and any server commands before it, must arrive within `timeout` ms of the send.
    /// A caller that waited on the lock while another timed out fails at once (`dead`), not after
    /// a bound of its own.
    static func request(_ conn: VFIOUserConnection, _ lock: borrowing Mutex<UInt16>, _ dead: borrowing Atomic<Bool>, _ timeout: Int,
                        _ cmd: VFIOUserCommand, _ payload: [UInt8], fds: [Int32] = [], noReply: Bool = false,
                        memory: SharedDMAMemory? = nil) throws(VFIOUserError) -> VFIOUserMessage {
        let result: Result<VFIOUserMessage, VFIOUserError> = lock.withLock { id in
            if dead.load(ordering: .acquiring) { return .failure(.disconnected("\(conn.peer): the vfio-user server is gone")) }
            id &+= 1
            do throws(VFIOUserError) {
                try conn.send(VFIOUserMessage(id: id, command: cmd, flags: noReply ? VFIOUserHeader.noReply : 0,
                                              payload: payload, fds: fds))
                if noReply { return .success(VFIOUserMessage(id: id, command: cmd)) }
                let deadline = monotonicNanoseconds() &+ UInt64(timeout) &* 1_000_000
                var r = try conn.receive(deadline: deadline)
                // Without a twin socket the server's own commands (DMA_READ/DMA_WRITE) arrive
                // between our command and its reply: answer them, then keep waiting.
                while !r.header.isReply {
                    try answerServer(r, conn: conn, memory: memory)
                    r = try conn.receive(deadline: deadline)
                }
                guard r.header.messageID == id else {
                    for f in r.fds { close(f) }
                    throw .protocolError("expected the reply to message \(id), got message \(r.header.messageID)")
                }
                if r.header.isError {
                    for f in r.fds { close(f) }
                    return .failure(.remote(command: cmd.rawValue, errno: r.header.error))
                }
                return .success(r)
            } catch let .timedOut(why) {
                dead.store(true, ordering: .releasing)
                let detail = why.hasPrefix("\(conn.peer): ") ? String(why.dropFirst(conn.peer.count + 2)) : why
                return .failure(.timedOut("\(conn.peer): no reply to \(cmd.specName) within \(timeout) ms (\(detail)); the server is taken for gone"))
            } catch {
                // Gone, or the stream is out of step (a reply that is not ours, a message that cannot
                // be framed): a later reply would be taken for the next command's, so every later
                // call fails at once. Marked under the lock, so a queued caller sees it.
                dead.store(true, ordering: .releasing)
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// DMA_READ / DMA_WRITE from the server: `u64 address; u64 count` (+ data), checked against our
    /// one DMA window; the reply to DMA_WRITE is `{address, count}` (16 bytes, as libvfio-user expects).
    static func answerServer(_ m: VFIOUserMessage, conn: VFIOUserConnection, memory: SharedDMAMemory?) throws(VFIOUserError) {
        for f in m.fds { close(f) }
        let r = LEReader(m.payload)
        let address = r.u64(0), count = r.u64(8)
        func reply(_ payload: [UInt8], error: UInt32? = nil) throws(VFIOUserError) {
            var out = VFIOUserMessage(id: m.header.messageID, command: .dmaRead,
                                      flags: VFIOUserHeader.reply | (error == nil ? 0 : VFIOUserHeader.errorFlag),
                                      error: error ?? 0, payload: error == nil ? payload : [])
            out.header.command = m.header.command
            try conn.send(out)
        }
        guard let memory, m.payload.count >= 16, count <= UInt64(VFIOUserConst.maxDataTransfer), address >= memory.deviceBase,
              address - memory.deviceBase <= UInt64(memory.size), count <= UInt64(memory.size) - (address - memory.deviceBase) else {
            return try reply([], error: VFIOUserErrno.efault)
        }
        let p = memory.base + Int(address - memory.deviceBase)
        switch VFIOUserCommand(rawValue: m.header.command) {
        case .dmaRead?:
            try reply(VFIOUserPayload.dmaAccess(address: address, count: count,
                                                data: Array(UnsafeRawBufferPointer(start: p, count: Int(count)))))
        case .dmaWrite?:
            guard m.payload.count == 16 + Int(count) else { return try reply([], error: VFIOUserErrno.einval) }
            m.payload.withUnsafeBytes { p.copyMemory(from: $0.baseAddress! + 16, byteCount: Int(count)) }
            try reply(VFIOUserPayload.dmaAccess(address: address, count: count))
        default:
            try reply([], error: VFIOUserErrno.enosys)
        }
    }

    func call(_ cmd: VFIOUserCommand, _ payload: [UInt8], fds: [Int32] = [], noReply: Bool = false) throws(PCIError) -> VFIOUserMessage {
        if dead.load(ordering: .acquiring) { throw .io("\(address): the vfio-user server is gone") }
        let reply: VFIOUserMessage
        do { reply = try Self.request(conn, lock, dead, timeoutMilliseconds, cmd, payload, fds: fds, noReply: noReply, memory: memory) } catch {
            switch error {
            case .protocolError, .remote: throw .io("\(address): \(error)")
            case .disconnected, .io, .timedOut: throw .io("\(error)")  // these name the socket already
            }
        }
        // No reply after start-up carries a descriptor we use: a server that sends some gets them closed.
        for f in reply.fds { close(f) }
        return reply
    }

    public var isConnected: Bool { !dead.load(ordering: .acquiring) }
    /// The socket (tests close it under the driver to play a client that vanishes).
    public var connectionFD: Int32 { conn.fd }

    func read(region: UInt32, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        let r = try call(.regionRead, VFIOUserPayload.regionAccess(offset: UInt64(offset), region: region, count: UInt32(width)))
        guard r.payload.count == 16 + width else { throw .io("\(address): REGION_READ returned \(r.payload.count - 16) bytes, asked \(width)") }
        let rd = LEReader(r.payload)
        var v: UInt64 = 0
        for i in 0..<width { v |= UInt64(rd.u8(16 + i)) << (8 * UInt64(i)) }
        return v
    }

    func write(region: UInt32, offset: Int, width: Int, value: UInt64, posted: Bool = false) throws(PCIError) {
        let data = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        _ = try call(.regionWrite, VFIOUserPayload.regionAccess(offset: UInt64(offset), region: region, count: UInt32(width), data: data),
                     noReply: posted)
    }

    // MARK: PCIFunction

    public func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 {
        guard offset >= 0, offset + width <= regionSizes[Int(VFIOUserConst.configRegion)] else {
            throw .outOfRange(what: "config space", offset: offset, width: width, limit: regionSizes[Int(VFIOUserConst.configRegion)])
        }
        return UInt32(truncatingIfNeeded: try read(region: VFIOUserConst.configRegion, offset: offset, width: width))
    }

    public func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {
        try write(region: VFIOUserConst.configRegion, offset: offset, width: width, value: UInt64(value))
    }

    public func bar(_ index: Int) -> BARInfo? {
        guard index >= 0, index < 6, regionSizes[index] > 0 else { return nil }
        return BARInfo(size: regionSizes[index], isMemory: true, mapped: mapped[index])
    }

    public func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        if let p = mapped[index], offset >= 0, offset + width <= regionSizes[index] {
            switch width {
            case 1: return UInt64(cshim_mmio_read8(p + offset))
            case 2: return UInt64(cshim_mmio_read16(p + offset))
            case 4: return UInt64(cshim_mmio_read32(p + offset))
            default: return UInt64(cshim_mmio_read32(p + offset)) | UInt64(cshim_mmio_read32(p + offset + 4)) << 32
            }
        }
        return try read(region: UInt32(index), offset: offset, width: width)
    }

    /// BAR writes are posted when they are doorbell-sized (2 or 4 bytes into the notify area is
    /// the hot path); register writes wait for the reply so errors surface.
    public func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) {
        if let p = mapped[index], offset >= 0, offset + width <= regionSizes[index] {
            switch width {
            case 1: cshim_mmio_write8(p + offset, UInt8(truncatingIfNeeded: value))
            case 2: cshim_mmio_write16(p + offset, UInt16(truncatingIfNeeded: value))
            case 4: cshim_mmio_write32(p + offset, UInt32(truncatingIfNeeded: value))
            default:
                cshim_mmio_write32(p + offset, UInt32(truncatingIfNeeded: value))
                cshim_mmio_write32(p + offset + 4, UInt32(truncatingIfNeeded: value >> 32))
            }
            return
        }
        if postedWrites(index, offset), width <= 8 { return try postWrite(region: UInt32(index), offset: offset, width: width, value: value) }
        try write(region: UInt32(index), offset: offset, width: width, value: value)
    }

    /// A doorbell as a posted REGION_WRITE (header, `u64 offset; u32 region; u32 count`, data), built
    /// on the stack and sent under the lock: no heap allocation per notification (the `--no-poll`
    /// hot path). Same wire bytes as `write(..., posted: true)`.
    func postWrite(region: UInt32, offset: Int, width: Int, value: UInt64) throws(PCIError) {
        if dead.load(ordering: .acquiring) { throw .io("\(address): the vfio-user server is gone") }
        let size = VFIOUserHeader.length + 16 + width
        let result: Result<Void, VFIOUserError> = withUnsafeTemporaryAllocation(byteCount: 48, alignment: 8) { m in
            lock.withLock { id in
                if dead.load(ordering: .acquiring) { return .failure(.disconnected("\(conn.peer): the vfio-user server is gone")) }
                id &+= 1
                m.storeBytes(of: id.littleEndian, toByteOffset: 0, as: UInt16.self)
                m.storeBytes(of: VFIOUserCommand.regionWrite.rawValue.littleEndian, toByteOffset: 2, as: UInt16.self)
                m.storeBytes(of: UInt32(size).littleEndian, toByteOffset: 4, as: UInt32.self)
                m.storeBytes(of: VFIOUserHeader.noReply.littleEndian, toByteOffset: 8, as: UInt32.self)
                m.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
                m.storeBytes(of: UInt64(offset).littleEndian, toByteOffset: 16, as: UInt64.self)
                m.storeBytes(of: region.littleEndian, toByteOffset: 24, as: UInt32.self)
                m.storeBytes(of: UInt32(width).littleEndian, toByteOffset: 28, as: UInt32.self)
                for i in 0..<width { m.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))), toByteOffset: 32 + i, as: UInt8.self) }
                do throws(SocketError) {
                    try conn.socket.send(raw: UnsafeRawBufferPointer(rebasing: m[0..<size]), what: "message \(id)")
                    return .success(())
                } catch {
                    dead.store(true, ordering: .releasing)  // a half-sent message leaves the stream out of step
                    return .failure(VFIOUserError(error))
                }
            }
        }
        do { try result.get() } catch { throw .io("\(error)") }
    }

    /// Writes the transport marks as doorbells (see `PCITransport.notify`): offsets in `postedRange` of BAR `postedBAR`.
    public var postedBAR = -1
    public var postedRange: Range<Int> = 0..<0
    func postedWrites(_ bar: Int, _ offset: Int) -> Bool { bar == postedBAR && postedRange.contains(offset) }

    public var dma: any DMAAllocator { memory }

    public func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] {
        disableInterrupts()
        let fds = try EventFDSet.vectors(vectors)
        do {
            _ = try call(.deviceSetIRQs, VFIOUserPayload.setIRQs(flags: VFIOUserConst.dataEventFD | VFIOUserConst.actionTrigger,
                                                                 index: VFIOUserConst.irqMSIX, start: 0, count: UInt32(vectors)),
                         fds: fds.raw)
        } catch {
            fds.close()
            throw error
        }
        interruptFDs = fds
        return fds.raw
    }

    public func disableInterrupts() {
        guard let fds = interruptFDs else { return }
        _ = try? call(.deviceSetIRQs, VFIOUserPayload.setIRQs(flags: VFIOUserConst.dataNone | VFIOUserConst.actionTrigger,
                                                              index: VFIOUserConst.irqMSIX, start: 0, count: 0))
        fds.close()
        interruptFDs = nil
    }

    public var backendDetails: [(String, String)] {
        [("backend", "vfio-user \(conn.peer)"), ("dma", "memfd, \(memory.size / 1048576) MiB at 0x\(String(memory.deviceBase, radix: 16))"),
         ("server_capabilities", serverCapabilities)]
    }
}
