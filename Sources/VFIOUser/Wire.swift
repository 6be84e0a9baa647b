import VirtioRing
import VirtioWire

/// vfio-user commands (QEMU docs/interop/vfio-user.rst).
public enum VFIOUserCommand: UInt16, Sendable, CaseIterable {
    case version = 1, dmaMap = 2, dmaUnmap = 3, deviceGetInfo = 4, deviceGetRegionInfo = 5, deviceGetRegionIOFDs = 6,
         deviceGetIRQInfo = 7, deviceSetIRQs = 8, regionRead = 9, regionWrite = 10, dmaRead = 11, dmaWrite = 12,
         deviceReset = 13

    /// The protocol's own name (VFIO_USER_<name> in vfio-user.rst), for messages.
    public var specName: String {
        switch self {
        case .version: "VERSION"
        case .dmaMap: "DMA_MAP"
        case .dmaUnmap: "DMA_UNMAP"
        case .deviceGetInfo: "DEVICE_GET_INFO"
        case .deviceGetRegionInfo: "DEVICE_GET_REGION_INFO"
        case .deviceGetRegionIOFDs: "DEVICE_GET_REGION_IO_FDS"
        case .deviceGetIRQInfo: "DEVICE_GET_IRQ_INFO"
        case .deviceSetIRQs: "DEVICE_SET_IRQS"
        case .regionRead: "REGION_READ"
        case .regionWrite: "REGION_WRITE"
        case .dmaRead: "DMA_READ"
        case .dmaWrite: "DMA_WRITE"
        case .deviceReset: "DEVICE_RESET"
        }
    }
}

/// Errno values carried in error replies (Linux numbering, as every implementation uses).
public enum VFIOUserErrno {
    public static let enoent: UInt32 = 2, e2big: UInt32 = 7, ebadf: UInt32 = 9, efault: UInt32 = 14, eexist: UInt32 = 17,
                      einval: UInt32 = 22, enospc: UInt32 = 28, enosys: UInt32 = 38, emsgsize: UInt32 = 90
}

/// The 16-byte header every message starts with: `u16 msg_id; u16 command; u32 msg_size
/// (header included); u32 flags (type in bits 0-3: 0 command, 1 reply; 0x10 no reply; 0x20 error);
/// u32 error`. Little-endian, as every implementation is.
public struct VFIOUserHeader: Sendable, Equatable {
    public var messageID: UInt16
    public var command: UInt16
    public var size: UInt32
    public var flags: UInt32
    public var error: UInt32

    public static let length = 16
    public static let reply: UInt32 = 0x1, noReply: UInt32 = 0x10, errorFlag: UInt32 = 0x20

    public init(messageID: UInt16, command: UInt16, size: UInt32, flags: UInt32 = 0, error: UInt32 = 0) {
        self.messageID = messageID
        self.command = command
        self.size = size
        self.flags = flags
        self.error = error
    }

    public var isReply: Bool { flags & 0xF == Self.reply }
    public var isError: Bool { flags & Self.errorFlag != 0 }
    public var wantsReply: Bool { flags & Self.noReply == 0 }

    public var encoded: [UInt8] {
        var w = LEWriter()
        w.u16(messageID)
        w.u16(command)
        w.u32(size)
        w.u32(flags)
        w.u32(error)
        return w.out
    }

    /// The header at the start of `b`; bytes past its end read as zero (a short peer message
    /// still decodes, and its size field then says it is short).
    public init(decoding b: [UInt8]) {
        let r = LEReader(b)
        self.init(messageID: r.u16(0), command: r.u16(2), size: r.u32(4), flags: r.u32(8), error: r.u32(12))
    }

    /// The header at the start of `b`, read in place: the caller has framed at least 16 bytes.
    public init(decoding b: UnsafeRawBufferPointer) {
        func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        self.init(messageID: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt16.self)),
                  command: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2, as: UInt16.self)),
                  size: u32(4), flags: u32(8), error: u32(12))
    }
}

/// One message: header, payload, and the file descriptors that came with it (owned by the receiver).
public struct VFIOUserMessage: Sendable {
    public var header: VFIOUserHeader
    public var payload: [UInt8]
    public var fds: [Int32]

    public init(id: UInt16, command: VFIOUserCommand, flags: UInt32 = 0, error: UInt32 = 0, payload: [UInt8] = [],
                fds: [Int32] = []) {
        header = VFIOUserHeader(messageID: id, command: command.rawValue,
                                size: UInt32(VFIOUserHeader.length + payload.count), flags: flags, error: error)
        self.payload = payload
        self.fds = fds
    }

    init(header: VFIOUserHeader, payload: [UInt8], fds: [Int32]) {
        self.header = header
        self.payload = payload
        self.fds = fds
    }

    public var bytes: [UInt8] { header.encoded + payload }
}

/// The payloads of the commands this project speaks, each with its exact layout.
public enum VFIOUserPayload {
    /// VERSION: `u16 major; u16 minor; NUL-terminated JSON capabilities`.
    public static func version(major: UInt16, minor: UInt16, json: String) -> [UInt8] {
        var w = LEWriter()
        w.u16(major)
        w.u16(minor)
        w.bytes(Array(json.utf8) + [0])
        return w.out
    }

    public static func parseVersion(_ p: [UInt8]) -> (major: UInt16, minor: UInt16, json: String)? {
        guard p.count >= 4 else { return nil }
        let r = LEReader(p)
        let text = p.count > 4 ? Array(p[4...].prefix { $0 != 0 }) : []
        return (r.u16(0), r.u16(2), String(decoding: text, as: UTF8.self))
    }

    /// DMA_MAP: `u32 argsz (32); u32 flags (1 read, 2 write); u64 offset; u64 address; u64 size`.
    public static func dmaMap(flags: UInt32, offset: UInt64, address: UInt64, size: UInt64) -> [UInt8] {
        var w = LEWriter()
        w.u32(32)
        w.u32(flags)
        w.u64(offset)
        w.u64(address)
        w.u64(size)
        return w.out
    }

    /// DMA_UNMAP: `u32 argsz (24); u32 flags; u64 address; u64 size` (the reply echoes it).
    public static func dmaUnmap(flags: UInt32 = 0, address: UInt64, size: UInt64) -> [UInt8] {
        var w = LEWriter()
        w.u32(24)
        w.u32(flags)
        w.u64(address)
        w.u64(size)
        return w.out
    }

    /// DEVICE_GET_INFO: `u32 argsz; u32 flags (1 reset, 2 PCI); u32 num_regions; u32 num_irqs`.
    public static func deviceInfo(flags: UInt32, regions: UInt32, irqs: UInt32) -> [UInt8] {
        var w = LEWriter()
        w.u32(16)
        w.u32(flags)
        w.u32(regions)
        w.u32(irqs)
        return w.out
    }

    /// DEVICE_GET_REGION_INFO: `struct vfio_region_info` {u32 argsz; u32 flags (1 read, 2 write, 4 mmap,
    /// 8 caps); u32 index; u32 cap_offset; u64 size; u64 offset}.
    public static func regionInfo(argsz: UInt32, flags: UInt32, index: UInt32, size: UInt64, offset: UInt64) -> [UInt8] {
        var w = LEWriter()
        w.u32(argsz)
        w.u32(flags)
        w.u32(index)
        w.u32(0)
        w.u64(size)
        w.u64(offset)
        return w.out
    }

    /// DEVICE_GET_IRQ_INFO: `u32 argsz; u32 flags (1 eventfd); u32 index; u32 count`.
    public static func irqInfo(flags: UInt32, index: UInt32, count: UInt32) -> [UInt8] {
        var w = LEWriter()
        w.u32(16)
        w.u32(flags)
        w.u32(index)
        w.u32(count)
        return w.out
    }

    /// DEVICE_SET_IRQS: `struct vfio_irq_set` {u32 argsz; u32 flags; u32 index; u32 start; u32 count};
    /// eventfds travel as SCM_RIGHTS, never in the payload.
    public static func setIRQs(flags: UInt32, index: UInt32, start: UInt32, count: UInt32) -> [UInt8] {
        var w = LEWriter()
        w.u32(20)
        w.u32(flags)
        w.u32(index)
        w.u32(start)
        w.u32(count)
        return w.out
    }

    /// REGION_READ/WRITE head: `u64 offset; u32 region; u32 count`, then data for writes and read replies.
    public static func regionAccess(offset: UInt64, region: UInt32, count: UInt32, data: [UInt8] = []) -> [UInt8] {
        var w = LEWriter()
        w.u64(offset)
        w.u32(region)
        w.u32(count)
        w.bytes(data)
        return w.out
    }

    /// DMA_READ/WRITE head: `u64 address; u64 count`, then data.
    public static func dmaAccess(address: UInt64, count: UInt64, data: [UInt8] = []) -> [UInt8] {
        var w = LEWriter()
        w.u64(address)
        w.u64(count)
        w.bytes(data)
        return w.out
    }
}

/// VFIO constants the protocol reuses (include/uapi/linux/vfio.h).
public enum VFIOUserConst {
    public static let configRegion: UInt32 = 7
    public static let numRegions: UInt32 = 9
    public static let numIRQs: UInt32 = 5
    public static let irqMSIX: UInt32 = 2
    public static let regionRead: UInt32 = 1, regionWrite: UInt32 = 2, regionMmap: UInt32 = 4
    public static let deviceReset: UInt32 = 1, devicePCI: UInt32 = 2
    public static let irqEventFD: UInt32 = 1
    public static let dataNone: UInt32 = 1, dataBool: UInt32 = 2, dataEventFD: UInt32 = 4, actionTrigger: UInt32 = 0x20
    public static let dmaRead: UInt32 = 1, dmaWrite: UInt32 = 2
    /// Largest message accepted: 1 MiB of data (max_data_xfer_size) plus headers.
    public static let maxDataTransfer = 1 << 20
    public static let maxMessage = maxDataTransfer + 4096
}
