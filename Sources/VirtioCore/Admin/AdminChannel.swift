import Logging
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// The driver side of the admin virtqueues (VIRTIO_F_ADMIN_VQ, `admin.tex`): sets the queues up
/// from admin_queue_index/num, does the LIST_QUERY → LIST_USE handshake per group before anything
/// else, never sends an opcode outside the agreed set, checks SR-IOV member ids against NumVFs,
/// retries EAGAIN, and decodes what the (untrusted) device wrote.
///
/// Commands go out one at a time, round-robin over the admin queues, each waited for before the
/// next: the device may run commands on different queues in any order, so this is how the driver
/// "enforces ordering itself" (`admin.tex`). Use it from one thread at a time.
public final class AdminChannel<T: VirtioTransport> {
    public let device: VirtioDevice<T>
    /// The admin queues' indices (admin_queue_index ..< +admin_queue_num).
    public let queueIndices: Range<Int>
    let queues: UnsafeMutablePointer<Virtqueue<T>>
    let buffers: [DMARegion]
    /// Largest device-readable part (header + data) and device-writable part (status + result).
    public static var maxReadable: Int { 64 * 1024 }
    public static var maxWritable: Int { 64 * 1024 }
    public var timeoutMilliseconds = 5_000
    /// EAGAIN is retried this many times (with a growing pause) before it is reported.
    public var eagainRetries = 16
    /// Commands sent per admin queue (the ordering tests read it).
    public private(set) var commandsPerQueue: [Int]
    /// Per group type: what LIST_QUERY offered, and what LIST_USE agreed.
    public private(set) var offered: [UInt16: AdminOpcodeSet] = [:]
    public private(set) var inUse: [UInt16: AdminOpcodeSet] = [:]
    /// Every opcode this driver knows how to encode and decode.
    public static var known: AdminOpcodeSet { AdminOpcodeSet(AdminOpcode.allCases.map(\.rawValue)) }
    private var next = 0
    private var broken: String?

    /// Sets up every admin queue the device announces. Call after feature negotiation and
    /// before DRIVER_OK (queues are configured before DRIVER_OK).
    public init(device: VirtioDevice<T>, queueSize: Int = 64) throws(AdminError) {
        self.device = device
        guard device.has(VirtioFeature.adminVQ) else {
            throw .noAdminQueue(device.offered.contains(VirtioFeature.adminVQ)
                ? "\(device.transport.name): VIRTIO_F_ADMIN_VQ was offered but not negotiated"
                : "\(device.transport.name) has no admin virtqueue (VIRTIO_F_ADMIN_VQ, bit 41, not offered)")
        }
        let range: Range<Int>
        do { range = try device.transport.adminQueueRange() } catch { throw .setup(error) }
        queueIndices = range
        let count = min(range.count, 64)  // a device announcing thousands gets 64 used
        queues = .allocate(capacity: count)
        var made = 0
        var regions: [DMARegion] = []
        do throws(VirtioError) {
            for i in 0..<count {
                let q = try device.makeQueue(range.lowerBound + i, size: queueSize, admin: true)
                (queues + i).initialize(to: q)
                made += 1
                do {
                    regions.append(try device.transport.dma.allocate(length: Self.maxReadable + Self.maxWritable,
                                                                     alignment: 4096))
                } catch { throw VirtioError.dma(error) }
            }
        } catch {
            queues.deinitialize(count: made)
            queues.deallocate()
            throw .setup(error)
        }
        buffers = regions
        commandsPerQueue = Array(repeating: 0, count: count)
    }

    deinit {
        queues.deinitialize(count: buffers.count)
        queues.deallocate()
    }

    // MARK: handshake

    /// LIST_QUERY then LIST_USE for `group` (`admin.tex`: the first commands after reset, and
    /// the driver waits for OK before issuing any other). `use` defaults to everything offered
    /// that this driver knows; it MUST be a subset of what LIST_QUERY returned.
    @discardableResult
    public func activate(group: AdminGroup, use: AdminOpcodeSet? = nil) throws(AdminError) -> AdminOpcodeSet {
        let offeredSet = try listQuery(group: group)
        var wanted = use ?? offeredSet.intersection(Self.known)
        wanted.insert(AdminOpcode.listQuery.rawValue)
        wanted.insert(AdminOpcode.listUse.rawValue)
        try listUse(group: group, wanted)
        return wanted
    }

    /// LIST_QUERY: the opcodes the device supports for `group`.
    public func listQuery(group: AdminGroup) throws(AdminError) -> AdminOpcodeSet {
        let r = try execute(AdminCommand(opcode: AdminOpcode.listQuery.rawValue, group: group.rawValue,
                                         resultCapacity: Self.bitmapBytes))
        let set = AdminOpcodeSet(decoding: r)
        // admin.tex: LIST_QUERY and LIST_USE are always supported; a device saying otherwise is broken.
        guard set.contains(AdminOpcode.listQuery.rawValue), set.contains(AdminOpcode.listUse.rawValue) else {
            throw .handshake("LIST_QUERY result lacks LIST_QUERY/LIST_USE (bits 0 and 1), which every device supports: \(set.opcodes)")
        }
        offered[group.rawValue] = set
        inUse[group.rawValue] = nil
        return set
    }

    /// LIST_USE: tells the device which opcodes the driver will use (a subset of LIST_QUERY's).
    public func listUse(group: AdminGroup, _ set: AdminOpcodeSet) throws(AdminError) {
        guard let offeredSet = offered[group.rawValue] else {
            throw .handshake("LIST_USE before LIST_QUERY for group \(group)")
        }
        guard set.isSubset(of: offeredSet) else {
            let extra = set.opcodes.filter { !offeredSet.contains($0) }
            throw .handshake("LIST_USE would name opcodes the device did not offer: \(extra.map(AdminError.name).joined(separator: ", "))")
        }
        _ = try execute(AdminCommand(opcode: AdminOpcode.listUse.rawValue, group: group.rawValue, data: set.encoded))
        inUse[group.rawValue] = set
    }

    /// 0x0-0x3f: one le64 word covers every opcode of 1.4 with room to spare.
    static var bitmapBytes: Int { 8 }

    // MARK: commands

    /// Sends `command` and returns its result bytes; a status other than OK throws.
    public func execute(_ command: AdminCommand) throws(AdminError) -> [UInt8] {
        let r = try send(command)
        guard r.status.effective == .ok else {
            throw .commandFailed(opcode: command.opcode, group: command.group, member: command.memberID,
                                 status: r.status, qualifier: r.qualifier)
        }
        return r.result
    }

    /// Sends `command` after the checks the spec asks of a driver and returns what the device
    /// answered, whatever its status (EAGAIN is retried first).
    public func send(_ command: AdminCommand) throws(AdminError) -> AdminResponse {
        try check(command)
        var attempt = 0
        while true {
            let r = try transact(command)
            guard r.status.effective == .eagain, attempt < eagainRetries else { return r }
            attempt += 1
            usleep(UInt32(min(1 << attempt, 1000) * 100))  // admin.tex: the driver SHOULD retry on EAGAIN
        }
    }

    /// The driver-side rules, before anything reaches the device (nothing is sent when one fails,
    /// not even the handshake).
    func check(_ c: AdminCommand) throws(AdminError) {
        if let broken { throw .channelBroken(broken) }
        guard let group = AdminGroup(rawValue: c.group) else {
            throw .invalidRequest("group type \(c.group) is reserved; use self (0) or sriov (1)")
        }
        guard c.readable.count <= Self.maxReadable else {
            throw .tooLarge(what: "command (header + data)", bytes: c.readable.count, limit: Self.maxReadable)
        }
        guard c.writableLength <= Self.maxWritable else {
            throw .tooLarge(what: "result space (status + result)", bytes: c.writableLength, limit: Self.maxWritable)
        }
        let isHandshake = c.opcode == AdminOpcode.listQuery.rawValue || c.opcode == AdminOpcode.listUse.rawValue
        switch group {
        case .selfGroup:
            guard c.memberID == 0 else { throw .invalidMember("the self group has one member, id 0 (got \(c.memberID))") }
        case .sriov:
            let state: SRIOVState?
            do { state = try (device.transport as? any SRIOVOwner)?.sriovState() } catch { throw .setup(error) }
            guard let state else {
                throw .invalidMember("\(device.transport.name) has no SR-IOV capability: the sriov group does not exist")
            }
            // admin.tex, SR-IOV group members: before and while a group command is outstanding the
            // driver MUST make sure VF Enable is set and VF Migration Capable is clear.
            guard state.vfEnable else {
                throw .sriovNotReady("\(device.transport.name): VF Enable (SR-IOV Control bit 0) is clear, so the SR-IOV group has no "
                    + "members to command; enable the VFs first (on Linux: echo N > /sys/bus/pci/devices/ADDR/sriov_numvfs)")
            }
            guard !state.vfMigrationCapable else {
                throw .sriovNotReady("\(device.transport.name): VF Migration Capable (SR-IOV Capabilities bit 0) is set; the virtio "
                    + "admin spec requires it clear for SR-IOV group commands, so none is sent")
            }
            // LIST_QUERY/LIST_USE speak for the whole group; other commands name a VF 1...NumVFs.
            if !isHandshake, c.memberID < 1 || c.memberID > UInt64(state.numVFs) {
                throw .invalidMember("member \(c.memberID) is out of range: the SR-IOV group has \(state.numVFs) VF(s)"
                    + (state.numVFs > 0 ? ", numbered 1...\(state.numVFs)" : ""))
            }
        }
        if !isHandshake {
            if inUse[c.group] == nil { try activate(group: group) }
            let used = inUse[c.group]!
            guard used.contains(c.opcode) else {
                throw .opcodeNotInUse(opcode: c.opcode, group: c.group, inUse: used.opcodes)
            }
        } else if c.opcode == AdminOpcode.listUse.rawValue, let offeredSet = offered[c.group] {
            guard AdminOpcodeSet(decoding: c.data).isSubset(of: offeredSet) else {
                throw .handshake("LIST_USE names opcodes LIST_QUERY did not offer")
            }
        }
    }

    /// One command on the next admin queue: both parts in DMA memory, one buffer, wait for it.
    private func transact(_ c: AdminCommand) throws(AdminError) -> AdminResponse {
        let qi = next % buffers.count
        next &+= 1
        let buffer = buffers[qi]
        let readable = c.readable
        let writableLength = c.writableLength
        readable.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let out = buffer.pointer + Self.maxReadable
        // Zeroed: fields the device does not write read as zero (admin.tex MUST).
        out.initializeMemory(as: UInt8.self, repeating: 0, count: writableLength)
        let elements = [BufferElement(address: buffer.deviceAddress, length: UInt32(readable.count)),
                        BufferElement(address: buffer.deviceAddress + UInt64(Self.maxReadable), length: UInt32(writableLength))]
        let token: UInt16
        do {
            token = try elements.withUnsafeBufferPointer { all throws(RingError) -> UInt16 in
                try queues[qi].add(readable: UnsafeBufferPointer(rebasing: all[0..<1]).span,
                                   writable: UnsafeBufferPointer(rebasing: all[1..<2]).span)
            }
        } catch { throw .ring(queue: queueIndices.lowerBound + qi, error) }
        commandsPerQueue[qi] += 1
        queues[qi].kick()
        let used = try waitUsed(qi, opcode: c.opcode)
        guard used.token == token else {
            broken = "admin queue \(queueIndices.lowerBound + qi) returned token \(used.token), expected \(token)"
            throw .channelBroken(broken!)
        }
        guard used.length >= UInt32(AdminCommand.statusSize) else {
            throw .shortStatus(opcode: c.opcode, length: used.length)
        }
        let written = Array(UnsafeRawBufferPointer(start: out, count: Int(used.length)))
        let r = LEReader(written)
        return AdminResponse(status: AdminStatus(r.u16(0)), qualifier: AdminQualifier(r.u16(2)),
                             result: Array(written[AdminCommand.statusSize...]))
    }

    private func waitUsed(_ qi: Int, opcode: UInt16) throws(AdminError) -> UsedBuffer {
        // Spin a little (a device thread answers in microseconds), then check health and time every 64 polls.
        var deadline = PollDeadline(milliseconds: timeoutMilliseconds, stride: 64)
        var spins = 0
        while true {
            let used: UsedBuffer?
            do { used = try queues[qi].pollUsed() } catch {
                broken = "admin queue \(queueIndices.lowerBound + qi): \(error)"
                throw .ring(queue: queueIndices.lowerBound + qi, error)
            }
            if let used { return used }
            spins += 1
            if spins < 1000 { continue }
            let expired = try deadline.expired { () throws(AdminError) in
                do throws(VirtioError) { try device.checkHealth() } catch {
                    broken = "\(error)"
                    throw .setup(error)
                }
            }
            if expired {
                broken = "\(AdminError.name(opcode)) timed out on admin queue \(queueIndices.lowerBound + qi)"
                throw .timeout(opcode: opcode, queue: queueIndices.lowerBound + qi, milliseconds: timeoutMilliseconds)
            }
            usleep(50)
        }
    }
}
