import Synchronization
import SystemPackage
import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// Counters of what the software block device served.
public struct SoftBlockCounters: Sendable, Equatable {
    public var reads = 0, writes = 0, flushes = 0, getIDs = 0, discards = 0, writeZeroes = 0, unsupported = 0,
               ioErrors = 0, bytesRead = 0, bytesWritten = 0
}

/// The virtio-blk personality: RAM- or file-backed storage and the request types
/// IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES with their status bytes.
public final class SoftBlock: SoftPersonality, @unchecked Sendable {
    public let options: SoftBlockOptions
    public let capacityBytes: UInt64
    let storage: UnsafeMutableRawPointer
    let mappedLength: Int
    let fd: FileDescriptor?
    public let faults: SoftFaults
    private let countersLock = Mutex(SoftBlockCounters())
    private let requestsServed = Atomic<Int>(0)
    /// Limits in the config (the device enforces what it advertises).
    let maxDiscardSectors: UInt32 = 1 << 16
    let maxDiscardSegments: UInt32 = 16
    let maxWriteZeroesSectors: UInt32 = 1 << 16
    let maxWriteZeroesSegments: UInt32 = 16

    public init(options: SoftBlockOptions, faults: SoftFaults = SoftFaults()) throws(SoftDeviceError) {
        self.options = options
        self.faults = faults
        let log = ConformanceLog()
        self.log = log
        stats = SoftStatsSink(knownTags: 0...10, log: log)
        if let path = options.file {
            let fd: FileDescriptor
            do {
                fd = try FileDescriptor.open(FilePath(path), options.readOnly ? .readOnly : .readWrite,
                                             options: options.readOnly ? [] : [.create], permissions: [.ownerReadWrite])
            } catch {
                throw .backing("cannot open \(path): \(error)")
            }
            var st = stat()
            guard fstat(fd.rawValue, &st) == 0 else { try? fd.close(); throw .backing("cannot stat \(path)") }
            var bytes = UInt64(st.st_size)
            if let size = options.size, size != bytes {
                guard !options.readOnly else {
                    try? fd.close()
                    throw .backing("\(path) is \(bytes) bytes but size=\(size) was asked and ro=on forbids resizing")
                }
                guard size > bytes else {
                    try? fd.close()
                    throw .backing("\(path) is \(bytes) bytes, larger than size=\(size); refusing to truncate it")
                }
                guard ftruncate(fd.rawValue, off_t(size)) == 0 else {
                    let e = errno
                    try? fd.close()
                    throw .backing("cannot grow \(path) to \(size) bytes: \(String(cString: strerror(e)))")
                }
                bytes = size
            }
            bytes -= bytes % UInt64(options.blockSize)
            guard bytes > 0 else { try? fd.close(); throw .backing("\(path) is empty; give size=") }
            let prot = options.readOnly ? PROT_READ : PROT_READ | PROT_WRITE
            let p = mmap(nil, Int(bytes), prot, MAP_SHARED, fd.rawValue, 0)
            guard let p, p != MAP_FAILED else {
                let e = errno
                try? fd.close()
                throw .backing("cannot map \(path): \(String(cString: strerror(e)))")
            }
            self.fd = fd
            storage = p
            capacityBytes = bytes
            mappedLength = Int(bytes)
        } else {
            let bytes = options.size ?? (64 << 20)
            let p = mmap(nil, Int(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else {
                throw .backing("cannot allocate \(bytes) bytes of RAM: \(String(cString: strerror(errno)))")
            }
            fd = nil
            storage = p
            capacityBytes = bytes
            mappedLength = Int(bytes)
        }
    }

    deinit {
        munmap(storage, mappedLength)
        try? fd?.close()
    }

    public var deviceType: VirtioDeviceType { .block }
    public var queueCount: Int { options.queues + (options.statsQueue ? 1 : 0) }
    /// The draft statistics queue follows the request queues.
    public var statisticsQueue: Int? { options.statsQueue ? options.queues : nil }
    public var statisticsSink: SoftStatsSink? { options.statsQueue ? stats : nil }
    /// Seed 000's draft: tags READ_IO (0) ... TIME_IN_QUEUE (10).
    public let stats: SoftStatsSink
    /// Rules the driver broke on the statistics queue.
    public let log: ConformanceLog
    public var maxQueueSize: Int { options.queueSize }
    public var counters: SoftBlockCounters { countersLock.withLock { $0 } }
    public var sectors: UInt64 { capacityBytes / 512 }

    public var deviceFeatures: FeatureSet {
        var f: FeatureSet = [BlockFeature.segMax, BlockFeature.blockSize, BlockFeature.topology]
        if options.queues > 1 { f.insert(BlockFeature.multiQueue) }
        if options.flush { f.insert(BlockFeature.flush) }
        if options.discard { f.insert(BlockFeature.discard) }
        if options.writeZeroes { f.insert(BlockFeature.writeZeroes) }
        if options.readOnly { f.insert(BlockFeature.readOnly) }
        if options.statsQueue { f.insert(BlockFeature.draftStatsVQ) }
        return f
    }

    /// `struct virtio_blk_config` (64 bytes through write_zeroes_may_unmap and padding).
    public func configBytes() -> [UInt8] {
        var c = BlockConfig(capacitySectors: sectors, blockSize: UInt32(options.blockSize), numQueues: UInt16(options.queues))
        c.sizeMax = 0                                   // SIZE_MAX not offered
        c.segMax = UInt32(options.segMax)
        c.physicalBlockExponent = 0
        c.alignmentOffset = 0
        c.minIOSize = 1                                 // in logical blocks
        c.optimalIOSize = 0
        c.writeback = 1
        c.maxDiscardSectors = maxDiscardSectors
        c.maxDiscardSegments = maxDiscardSegments
        c.discardSectorAlignment = UInt32(options.blockSize / 512)
        c.maxWriteZeroesSectors = maxWriteZeroesSectors
        c.maxWriteZeroesSegments = maxWriteZeroesSegments
        c.writeZeroesMayUnmap = true
        return c.encoded()
    }

    private func count(_ body: (inout SoftBlockCounters) -> Void) { countersLock.withLock { body(&$0) } }

    public func handle(queue: Int, chain: AvailableChain, elements: UnsafeMutableBufferPointer<ChainElement>,
                       memory: DMAArena, negotiated: FeatureSet) -> RequestOutcome {
        if queue == statisticsQueue { return stats.received(chain: chain, elements: elements, memory: memory) }
        if faults.neverComplete, served >= faults.faultAfterRequests { return .held }  // fault: taken, never returned
        let io = ChainIO(elements: elements, chain: chain, memory: memory)
        let readable = io.readableBytes
        let writable = io.writableBytes
        // Framing: a 16-byte header first, a status byte last.
        guard readable >= BlockRequestHeader.size else {
            return .malformed("virtio-blk request header is \(readable) bytes, less than \(BlockRequestHeader.size)")
        }
        guard writable >= 1 else { return .malformed("virtio-blk request has no device-writable status byte") }
        guard let header = io.read16(at: 0, BlockRequestHeader.init(loading:)) else {
            return .malformed("virtio-blk request header is outside DMA memory")
        }
        let type = header.type
        let sector = header.sector
        let dataIn = writable - 1
        let dataOut = readable - BlockRequestHeader.size
        var used: UInt32 = 1
        var status = BlockStatusByte.ok
        requestsServed.add(1, ordering: .relaxed)

        func inRange(_ sector: UInt64, bytes: Int) -> Bool {
            let (end, o) = sector.multipliedReportingOverflow(by: 512)
            return !o && end <= capacityBytes && UInt64(bytes) <= capacityBytes - end
        }

        switch type {
        case BlockRequestType.read:
            if dataIn % 512 != 0 || !inRange(sector, bytes: dataIn) {
                status = BlockStatusByte.ioError
            } else {
                // The null backend completes at once: no data moves (as a benchmark's null device).
                guard options.nullBackend || io.write(at: 0, from: storage + Int(sector * 512), length: dataIn) else {
                    return .malformed("read data buffer is outside DMA memory")
                }
                used = UInt32(dataIn + 1)
                count { $0.reads += 1; $0.bytesRead += dataIn }
            }
        case BlockRequestType.write:
            if options.readOnly || dataOut % 512 != 0 || !inRange(sector, bytes: dataOut) {
                status = BlockStatusByte.ioError
            } else {
                guard options.nullBackend || io.read(at: BlockRequestHeader.size, into: storage + Int(sector * 512), length: dataOut) else {
                    return .malformed("write data buffer is outside DMA memory")
                }
                count { $0.writes += 1; $0.bytesWritten += dataOut }
            }
        case BlockRequestType.flush where negotiated.contains(BlockFeature.flush):
            if fd != nil, msync(storage, mappedLength, MS_SYNC) != 0 { status = BlockStatusByte.ioError }
            count { $0.flushes += 1 }
        case BlockRequestType.getID:
            // Up to 20 bytes, NUL-padded; no terminator when the serial fills all 20.
            var id = [UInt8](repeating: 0, count: 20)
            for (i, b) in options.serial.utf8.prefix(20).enumerated() { id[i] = b }
            let n = min(20, dataIn)
            guard id.withUnsafeBytes({ io.write(at: 0, from: $0.baseAddress!, length: n) }) else {
                return .malformed("GET_ID buffer is outside DMA memory")
            }
            used = UInt32(n + 1)
            count { $0.getIDs += 1 }
        case BlockRequestType.discard where negotiated.contains(BlockFeature.discard),
             BlockRequestType.writeZeroes where negotiated.contains(BlockFeature.writeZeroes):
            status = zeroRanges(io, bytes: dataOut, discard: type == BlockRequestType.discard)
        default:
            status = BlockStatusByte.unsupported
        }
        if status == BlockStatusByte.unsupported { count { $0.unsupported += 1 } }
        if status == BlockStatusByte.ioError { count { $0.ioErrors += 1 } }
        var byte = faults.statusOverride ?? status
        guard io.write(at: dataIn, from: &byte, length: 1) else { return .malformed("status byte is outside DMA memory") }
        return .used(used)
    }

    /// DISCARD and WRITE_ZEROES: `struct virtio_blk_discard_write_zeroes` segments; both zero the range here.
    private func zeroRanges(_ io: ChainIO<DMAArena>, bytes: Int, discard: Bool) -> UInt8 {
        guard bytes > 0, bytes % BlockDiscardSegment.size == 0 else { return BlockStatusByte.ioError }
        let segments = bytes / BlockDiscardSegment.size
        guard segments <= Int(discard ? maxDiscardSegments : maxWriteZeroesSegments) else { return BlockStatusByte.ioError }
        guard !options.readOnly else { return BlockStatusByte.ioError }
        var ranges: [(UInt64, Int)] = []
        for i in 0..<segments {
            guard let seg = io.read16(at: BlockRequestHeader.size + i * BlockDiscardSegment.size,
                                      BlockDiscardSegment.init(loading:)) else {
                return BlockStatusByte.ioError
            }
            let sector = seg.sector, num = seg.sectors, flags = seg.flags
            // Discard takes no flags; write zeroes takes only UNMAP (bit 0).
            if discard ? flags != 0 : flags & ~BlockDiscardSegment.unmap != 0 { return BlockStatusByte.unsupported }
            guard num <= (discard ? maxDiscardSectors : maxWriteZeroesSectors) else { return BlockStatusByte.ioError }
            let (end, o) = sector.addingReportingOverflow(UInt64(num))
            guard !o, end <= sectors else { return BlockStatusByte.ioError }
            ranges.append((sector, Int(num)))
        }
        for (sector, num) in ranges {
            (storage + Int(sector * 512)).initializeMemory(as: UInt8.self, repeating: 0, count: num * 512)
        }
        count { if discard { $0.discards += 1 } else { $0.writeZeroes += 1 } }
        return BlockStatusByte.ok
    }

    /// Requests served since creation (for the needs-reset fault).
    var served: Int { requestsServed.load(ordering: .relaxed) }

    /// A copy of `length` bytes of the disk at `offset` (for tests).
    public func peek(offset: Int, length: Int) -> [UInt8] {
        precondition(offset >= 0 && offset + length <= Int(capacityBytes))
        return Array(UnsafeRawBufferPointer(start: storage + offset, count: length))
    }
}

extension SoftPCIFunction where P == SoftBlock {
    /// A software virtio-blk PCI function built from `soft:blk` options. With `vfs=N` it is an
    /// SR-IOV owner with an admin queue and N member functions (`admin!.members`); the members
    /// share the owner's DMA memory and its disk (as two hosts with shared storage would), so a
    /// driver can move between them.
    public static func block(_ options: SoftBlockOptions, faults given: SoftFaults = SoftFaults(),
                             address: String = "soft:blk") throws(SoftDeviceError) -> SoftPCIFunction<SoftBlock> {
        // Faults given in code win; otherwise the ones the spelling named (fault=...).
        let faults = given == SoftFaults() ? options.faults : given
        let blk = try SoftBlock(options: options, faults: faults)
        var admin: SoftAdmin?
        var arena: DMAArena?
        if options.hasAdmin {
            do { arena = try DMAArena(size: options.dmaBytes) } catch { throw .dma("\(error)") }
            var members: [SoftPCIFunction<SoftBlock>] = []
            for vf in 0..<options.vfs {
                members.append(try SoftPCIFunction(personality: blk, address: "\(address)/vf\(vf + 1)",
                                                   dmaBytes: options.dmaBytes, msixVectors: options.msixVectors,
                                                   faults: faults, ringFeatures: SoftRingFeatures(options), arena: arena))
            }
            let sriov = options.vfs > 0
                ? SRIOVState(totalVFs: options.vfs, numVFs: options.vfs, vfEnable: options.vfEnable,
                              vfMigrationCapable: options.vfMigrationCapable)
                : nil
            admin = SoftAdmin(members: members, queueCount: options.adminQueues, sriov: sriov, fault: options.adminFault)
        }
        return try SoftPCIFunction(personality: blk, address: address, dmaBytes: options.dmaBytes,
                                   msixVectors: options.msixVectors, faults: faults,
                                   ringFeatures: SoftRingFeatures(options), arena: arena, admin: admin)
    }
}
