import CShim
import HostIO
import VirtioCore
import VirtioPCI
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// A PCI function a vfio-user server can host: register access through `PCIFunction`, plus what
/// the client hands over: its DMA memory and its interrupt eventfds.
public protocol VFIOUserHostedDevice: PCIFunction {
    /// Bytes of configuration space (256 or 4096).
    var configSpaceSize: Int { get }
    /// The client mapped `length` bytes at `pointer` (this process) as device addresses from `address`,
    /// kept mapped while `owner` lives. Returns why it cannot be used, or nil.
    func adoptDMA(pointer: UnsafeMutableRawPointer, length: Int, address: UInt64, owner: AnyObject?) -> String?
    /// The client withdrew its DMA memory (only while no queue runs).
    func dropDMA() -> String?
    /// MSI-X vector i signals `fds[i]` (the server owns the fds and closes them on replacement).
    func useInterruptEventFDs(_ fds: [Int32])
    /// Device reset (VFIO_DEVICE_RESET, and when a client goes away).
    func resetDevice()
}

/// Serves one `VFIOUserHostedDevice` on a UNIX socket, one client at a time (QEMU's
/// docs/interop/vfio-user.rst). A malformed message gets an error reply; one that cannot be
/// framed ends that connection; a client that leaves gets the device reset, its DMA memory
/// unmapped and its eventfds closed, and the server waits for the next. A client that sends no
/// VERSION within `timeoutMilliseconds` of connecting, stalls inside a message, or stops
/// reading replies for that long is dropped the same way, so the next client is served.
public final class VFIOUserServer<D: VFIOUserHostedDevice>: @unchecked Sendable {
    public let path: String
    public let device: D
    let listenFD: Int32
    /// The client's DMA window; the device's arena holds it too, so it is unmapped when both let go.
    private var mapping: MappedMemory?
    /// The client's interrupt eventfds (received over SCM_RIGHTS; the device holds duplicates).
    private var irqFDs: EventFDSet?
    public private(set) var clientsServed = 0
    /// Connections that have ended (a `--clients N` stop counts these, never the one being served).
    public private(set) var clientsFinished = 0
    /// The bound on a silent new client, on the rest of a message once it started, and on a reply
    /// the client will not take. Idle time between messages is not bounded: a driver polling its
    /// rings in shared memory may send nothing for hours.
    public var timeoutMilliseconds = 5_000
    /// What happened, for `softdev serve` to print (one line per event).
    public var log: (String) -> Void = { _ in }
    /// A client dropped for breaking a bound (always worth telling the operator).
    public var warn: (String) -> Void = { _ in }

    public init(path: String, device: D) throws(VFIOUserError) {
        self.path = path
        self.device = device
        let s: Int32
        do { s = try listenUnix(path: path) } catch { throw VFIOUserError(error) }
        listenFD = s
    }

    deinit {
        close(listenFD)
        unlink(path)
        dropClientState()
    }

    /// Accepts and serves clients until `stop()` returns true between clients (checked each second).
    public func run(until stop: () -> Bool) {
        acceptOneAtATime(listenFD, pollMilliseconds: 1000, until: stop) { c in
            serve(VFIOUserConnection(fd: c, peer: "client \(clientsServed + 1)"), stop: stop)
        }
    }

    /// Serves one connection to its end.
    public func serve(_ conn: VFIOUserConnection, stop: () -> Bool = { false }) {
        clientsServed += 1
        log("client \(clientsServed) connected")
        var negotiated = false
        let bound = UInt64(min(max(timeoutMilliseconds, 1), 86_400_000)) * 1_000_000  // 1 ms to 1 day
        let handshakeDeadline = monotonicNanoseconds() + bound
        conn.sendTimeoutMilliseconds = timeoutMilliseconds
        // One receive buffer and descriptor list per connection: messages are read in place.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: VFIOUserConst.maxMessage, alignment: 8)
        var fds: [Int32] = []
        fds.reserveCapacity(Int(CSHIM_MAX_FDS))
        defer {
            buffer.deallocate()
            // The client is gone: reset the device, forget its memory and eventfds (vfio-user.rst "Disconnect").
            device.resetDevice()
            dropClientState()
            conn.close()
            clientsFinished += 1
            log("client \(clientsServed) left; device reset, DMA unmapped, eventfds closed")
        }
        while !stop() {
            var p = pollfd(fd: conn.fd, events: Int16(POLLIN), revents: 0)
            let now = monotonicNanoseconds()
            let wait = negotiated || now >= handshakeDeadline ? 500 : Int32(min(500, (handshakeDeadline - now) / 1_000_000 + 1))
            let ready = poll(&p, 1, wait)
            if ready < 0 { continue }  // EINTR (a stop signal): check stop, never read an idle client
            if ready == 0 {
                if !negotiated, monotonicNanoseconds() >= handshakeDeadline {
                    warn("client \(clientsServed) sent no VERSION within \(timeoutMilliseconds) ms; dropped")
                    return
                }
                continue
            }
            // The whole message must be in within the bound once its first byte is (and before
            // the handshake deadline while VERSION is still due).
            let deadline = negotiated ? monotonicNanoseconds() + bound : handshakeDeadline
            let length: Int
            do { length = try conn.receive(into: buffer, fds: &fds, deadline: deadline) } catch {
                if case let .timedOut(why) = error { warn("\(why); dropped") }
                if case let .protocolError(why) = error {
                    // Cannot be framed: tell the client (best effort) and end the connection.
                    log("unframeable message: \(why)")
                    try? conn.send(VFIOUserMessage(id: 0, command: .version, flags: VFIOUserHeader.reply | VFIOUserHeader.errorFlag,
                                                   error: VFIOUserErrno.emsgsize))
                }
                return
            }
            let raw = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
            let header = VFIOUserHeader(decoding: raw)
            do throws(VFIOUserError) {
                if negotiated, fds.isEmpty, try serveSmallWrite(header, raw, on: conn) { continue }
                let m = VFIOUserMessage(header: header, payload: Array(raw[VFIOUserHeader.length...]), fds: fds)
                fds.removeAll(keepingCapacity: true)
                let reply = handle(m, negotiated: &negotiated)
                for fd in m.fds where !reply.consumed.contains(fd) { close(fd) }
                guard header.wantsReply else { continue }
                if let e = reply.errno { try conn.send(errorReply(to: header, errno: e)); continue }
                var out = VFIOUserMessage(id: header.messageID, command: .version, flags: VFIOUserHeader.reply, payload: reply.payload)
                out.header.command = header.command
                try conn.send(out)
            } catch {
                if case let .timedOut(why) = error { warn("\(why); dropped") }
                return
            }
        }
    }

    /// A REGION_WRITE of at most 8 bytes (a doorbell, a register) served from the receive buffer,
    /// its reply (if wanted) built on the stack: the request path allocates nothing. False for any
    /// other message, and for one the general path must refuse (its reply says why).
    private func serveSmallWrite(_ h: VFIOUserHeader, _ m: UnsafeRawBufferPointer, on conn: VFIOUserConnection) throws(VFIOUserError) -> Bool {
        let at = VFIOUserHeader.length  // payload: u64 offset; u32 region; u32 count; data
        guard h.command == VFIOUserCommand.regionWrite.rawValue, !h.isReply, m.count >= at + 16 else { return false }
        let count = Int(UInt32(littleEndian: m.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self)))
        guard count <= 8, m.count == at + 16 + count else { return false }
        let offset = Int(truncatingIfNeeded: UInt64(littleEndian: m.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
        let region = UInt32(littleEndian: m.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self))
        let done: Bool
        do { _ = try access(region: region, offset: offset, count: count, write: UnsafeRawBufferPointer(rebasing: m[(at + 16)...])); done = true } catch {
            done = false
        }
        guard h.wantsReply else { return true }
        guard done else { try conn.send(errorReply(to: h, errno: VFIOUserErrno.einval)); return true }
        // The reply echoes the request's offset, region and count (vfio-user.rst REGION_WRITE).
        try withUnsafeTemporaryAllocation(byteCount: at + 16, alignment: 8) { (r) throws(VFIOUserError) in
            r.copyMemory(from: UnsafeRawBufferPointer(rebasing: m[0..<(at + 16)]))
            r.storeBytes(of: UInt32(at + 16).littleEndian, toByteOffset: 4, as: UInt32.self)
            r.storeBytes(of: VFIOUserHeader.reply.littleEndian, toByteOffset: 8, as: UInt32.self)
            r.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
            try conn.send(raw: UnsafeRawBufferPointer(r), id: h.messageID)
        }
        return true
    }

    /// The error reply to a command: its id and command, the error flag and errno.
    private func errorReply(to h: VFIOUserHeader, errno e: UInt32) -> VFIOUserMessage {
        var out = VFIOUserMessage(id: h.messageID, command: .version, flags: VFIOUserHeader.reply | VFIOUserHeader.errorFlag, error: e)
        out.header.command = h.command
        return out
    }

    struct Reply {
        var payload: [UInt8] = []
        var errno: UInt32?
        var consumed: [Int32] = []
    }

    func fail(_ e: UInt32) -> Reply { Reply(errno: e) }

    func handle(_ m: VFIOUserMessage, negotiated: inout Bool) -> Reply {
        guard !m.header.isReply else { return fail(VFIOUserErrno.einval) }
        guard let cmd = VFIOUserCommand(rawValue: m.header.command) else { return fail(VFIOUserErrno.enosys) }
        let r = LEReader(m.payload)
        if !negotiated, cmd != .version { return fail(VFIOUserErrno.einval) }  // VERSION comes first
        switch cmd {
        case .version:
            guard let v = VFIOUserPayload.parseVersion(m.payload), v.major == 0 else { return fail(VFIOUserErrno.einval) }
            negotiated = true
            let json = "{\"capabilities\":{\"max_msg_fds\":\(CSHIM_MAX_FDS),\"max_data_xfer_size\":\(VFIOUserConst.maxDataTransfer)}}"
            return Reply(payload: VFIOUserPayload.version(major: 0, minor: min(v.minor, 1), json: json))
        case .dmaMap:
            guard m.payload.count >= 32, r.u32(0) >= 32 else { return fail(VFIOUserErrno.einval) }
            let flags = r.u32(4), offset = r.u64(8), address = r.u64(16), size = r.u64(24)
            guard flags & ~3 == 0, size > 0, size <= 1 << 36 else { return fail(VFIOUserErrno.einval) }
            guard mapping == nil else { return fail(VFIOUserErrno.eexist) }  // one window: the client's arena
            guard let fd = m.fds.first else { return fail(VFIOUserErrno.einval) }  // DMA_READ/WRITE-only memory: not served
            // The client's offset and size: inside off_t, and inside the file it handed over (a
            // mapping past its end would SIGBUS the device on its first ring access).
            var st = stat()
            guard offset <= UInt64(Int64.max) - size, fstat(fd, &st) == 0, st.st_size >= 0,
                  offset + size <= UInt64(st.st_size) else { return fail(VFIOUserErrno.einval) }
            let prot = (flags & VFIOUserConst.dmaRead != 0 ? PROT_READ : 0) | (flags & VFIOUserConst.dmaWrite != 0 ? PROT_WRITE : 0)
            guard let p = mmap(nil, Int(size), prot, MAP_SHARED, fd, off_t(offset)), p != MAP_FAILED else {
                return fail(UInt32(errno))
            }
            let region = MappedMemory(pointer: p, length: Int(size), address: address)
            if let why = device.adoptDMA(pointer: p, length: Int(size), address: address, owner: region) {
                log("DMA_MAP refused: \(why)")
                return fail(VFIOUserErrno.einval)  // region goes, and unmaps, here
            }
            mapping = region
            log("DMA_MAP 0x\(String(address, radix: 16)) +\(size)")
            return Reply()  // the fd is closed after the reply; the mapping stays
        case .dmaUnmap:
            guard m.payload.count >= 24 else { return fail(VFIOUserErrno.einval) }
            let flags = r.u32(4), address = r.u64(8), size = r.u64(16)
            let all = flags & 2 != 0
            guard let map = mapping, all || (map.address == address && UInt64(map.length) == size) else {
                return fail(VFIOUserErrno.enoent)
            }
            if let why = device.dropDMA() {
                log("DMA_UNMAP refused: \(why)")
                return fail(VFIOUserErrno.einval)
            }
            mapping = nil
            return Reply(payload: Array(m.payload.prefix(24)))
        case .deviceGetInfo:
            return Reply(payload: VFIOUserPayload.deviceInfo(flags: VFIOUserConst.deviceReset | VFIOUserConst.devicePCI,
                                                             regions: VFIOUserConst.numRegions, irqs: VFIOUserConst.numIRQs))
        case .deviceGetRegionInfo:
            guard m.payload.count >= 32, r.u32(0) >= 32 else { return fail(VFIOUserErrno.einval) }
            let index = r.u32(8)
            guard index < VFIOUserConst.numRegions else { return fail(VFIOUserErrno.einval) }
            var size: UInt64 = 0
            if index == VFIOUserConst.configRegion { size = UInt64(device.configSpaceSize) } else if index < 6 {
                size = UInt64(device.bar(Int(index))?.size ?? 0)
            }
            let flags = size == 0 ? 0 : VFIOUserConst.regionRead | VFIOUserConst.regionWrite
            return Reply(payload: VFIOUserPayload.regionInfo(argsz: 32, flags: flags, index: index, size: size, offset: 0))
        case .deviceGetIRQInfo:
            guard m.payload.count >= 16 else { return fail(VFIOUserErrno.einval) }
            let index = r.u32(8)
            guard index < VFIOUserConst.numIRQs else { return fail(VFIOUserErrno.einval) }
            let count: UInt32 = index == VFIOUserConst.irqMSIX ? UInt32(msixVectors) : 0
            return Reply(payload: VFIOUserPayload.irqInfo(flags: VFIOUserConst.irqEventFD, index: index, count: count))
        case .deviceSetIRQs:
            guard m.payload.count >= 20 else { return fail(VFIOUserErrno.einval) }
            let flags = r.u32(4), index = r.u32(8), start = r.u32(12), count = r.u32(16)
            guard index == VFIOUserConst.irqMSIX else { return fail(VFIOUserErrno.einval) }
            if count == 0 || flags & VFIOUserConst.dataNone != 0 && m.fds.isEmpty {
                setInterruptFDs([])
                return Reply()
            }
            guard flags & VFIOUserConst.dataEventFD != 0, start == 0, Int(count) == m.fds.count, Int(count) <= msixVectors else {
                return fail(VFIOUserErrno.einval)
            }
            setInterruptFDs(m.fds)
            return Reply(consumed: m.fds)
        case .regionRead, .regionWrite:
            guard m.payload.count >= 16 else { return fail(VFIOUserErrno.einval) }
            let offset = Int(truncatingIfNeeded: r.u64(0)), region = r.u32(8), count = Int(r.u32(12))
            guard count <= VFIOUserConst.maxDataTransfer else { return fail(VFIOUserErrno.e2big) }
            if cmd == .regionWrite, m.payload.count - 16 != count { return fail(VFIOUserErrno.einval) }
            do {
                if cmd == .regionRead {
                    let data = try access(region: region, offset: offset, count: count, write: nil)
                    return Reply(payload: VFIOUserPayload.regionAccess(offset: UInt64(offset), region: region, count: UInt32(count), data: data))
                }
                _ = try m.payload.withUnsafeBytes { p in
                    Result { () throws(PCIError) in try access(region: region, offset: offset, count: count, write: UnsafeRawBufferPointer(rebasing: p[16...])) }
                }.get()
                return Reply(payload: Array(m.payload.prefix(16)))
            } catch {
                return fail(VFIOUserErrno.einval)
            }
        case .deviceReset:
            device.resetDevice()
            return Reply()
        case .deviceGetRegionIOFDs, .dmaRead, .dmaWrite:
            return fail(VFIOUserErrno.enosys)
        }
    }

    var msixVectors: Int { device.bar(1) == nil ? 0 : 8 }

    /// Region access in 1/2/4/8-byte pieces (configuration space in at most 4).
    func access(region: UInt32, offset: Int, count: Int, write: UnsafeRawBufferPointer?) throws(PCIError) -> [UInt8] {
        var out: [UInt8] = []
        var at = 0
        let known = region == VFIOUserConst.configRegion || region < 6
        let limit = !known ? 0 : region == VFIOUserConst.configRegion ? device.configSpaceSize : device.bar(Int(region))?.size ?? 0
        // The client's offset is any u64: compare without adding it to count (no overflow).
        guard known, offset >= 0, count <= limit, offset <= limit - count else {
            throw .outOfRange(what: "region \(region)", offset: offset, width: count, limit: limit)
        }
        while at < count {
            // The widest naturally aligned piece that fits (no array literal: doorbells come here).
            var w = region == VFIOUserConst.configRegion ? 4 : 8
            while w > 1, count - at < w || (offset + at) % w != 0 { w >>= 1 }
            if let write {
                var v: UInt64 = 0
                for i in 0..<w { v |= UInt64(write[at + i]) << (8 * UInt64(i)) }
                if region == VFIOUserConst.configRegion {
                    try device.configWrite(offset: offset + at, width: w, value: UInt32(truncatingIfNeeded: v))
                } else {
                    try device.barWrite(Int(region), offset: offset + at, width: w, value: v)
                }
            } else {
                let v: UInt64 = region == VFIOUserConst.configRegion
                    ? UInt64(try device.configRead(offset: offset + at, width: w))
                    : try device.barRead(Int(region), offset: offset + at, width: w)
                for i in 0..<w { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
            }
            at += w
        }
        return out
    }

    func setInterruptFDs(_ fds: [Int32]) {
        device.useInterruptEventFDs(fds)
        // The new ones arrived while the old were open, so no number is in both sets.
        irqFDs?.close()
        irqFDs = fds.isEmpty ? nil : EventFDSet(adopting: fds)
    }

    func dropClientState() {
        if irqFDs != nil { setInterruptFDs([]) }
        if mapping != nil {
            _ = device.dropDMA()
            mapping = nil
        }
    }
}
