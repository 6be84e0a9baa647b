/// Statistic kinds, units and bases of Linux's binary statistics (`KVM_STATS_TYPE_*`, `_UNIT_*`,
/// `_BASE_*` in include/uapi/linux/kvm.h; digest §c.12): descriptor `flags` = type | unit << 4 | base << 8.
public enum StatType: UInt32, Sendable, Codable, CaseIterable {
    case cumulative = 0, instant = 1, peak = 2, linearHistogram = 3, logHistogram = 4
    public var name: String {
        switch self {
        case .cumulative: "cumulative"
        case .instant: "instant"
        case .peak: "peak"
        case .linearHistogram: "linear-hist"
        case .logHistogram: "log-hist"
        }
    }
}

public enum StatUnit: UInt32, Sendable, Codable, CaseIterable {
    case none = 0, bytes = 1, seconds = 2, cycles = 3, boolean = 4
}

public enum StatBase: UInt32, Sendable, Codable {
    case pow10 = 0, pow2 = 1
}

/// One statistic: a name and how to read its `size` u64 values at `offset` in the data block.
public struct StatDescriptor: Sendable, Equatable, Codable {
    public var name: String
    public var type: StatType
    public var unit: StatUnit
    public var base: StatBase
    /// Value = raw × base^exponent (e.g. nanoseconds: seconds with exponent -9).
    public var exponent: Int16
    /// Number of u64 values (histogram buckets; 1 for a counter).
    public var size: UInt16
    /// Byte offset in the data block.
    public var offset: UInt32
    /// Linear histograms: the width of a bucket.
    public var bucketSize: UInt32

    public init(name: String, type: StatType = .cumulative, unit: StatUnit = .none, base: StatBase = .pow10,
                exponent: Int16 = 0, size: UInt16 = 1, offset: UInt32 = 0, bucketSize: UInt32 = 0) {
        self.name = name
        self.type = type
        self.unit = unit
        self.base = base
        self.exponent = exponent
        self.size = size
        self.offset = offset
        self.bucketSize = bucketSize
    }

    public var flags: UInt32 { type.rawValue | unit.rawValue << 4 | base.rawValue << 8 }
    /// Index of the first value in the data block (offsets are multiples of 8).
    public var index: Int { Int(offset) / 8 }
}

/// The file layout (digest §c.12): a 24-byte header `{u32 flags; u32 name_size; u32 num_desc;
/// u32 id_offset; u32 desc_offset; u32 data_offset}`, the id string (name_size bytes), the
/// descriptors (`{u32 flags; s16 exponent; u16 size; u32 offset; u32 bucket_size; char name[name_size]}`),
/// then the data block of native-endian u64 values.
///
/// The first three values are this project's, so readers can take consistent snapshots and tell
/// a live writer from a dead one: `seqcount` (odd while the writer updates: a seqlock),
/// `writer_pid`, and `heartbeat_ns` (CLOCK_MONOTONIC of the writer's last update).
public struct StatsLayout: Sendable, Equatable {
    public static let headerSize = 24
    /// What KVM uses; readers take it from the header.
    public static let defaultNameSize = 48
    public static let seqIndex = 0, pidIndex = 1, heartbeatIndex = 2

    public let id: String
    public let nameSize: Int
    public let descriptors: [StatDescriptor]

    /// Lays out `stats` after the three reserved values; offsets are assigned in order.
    public init(id: String, stats: [StatDescriptor], nameSize: Int = defaultNameSize) {
        self.id = id
        self.nameSize = nameSize
        var all = [StatDescriptor(name: "seqcount", type: .instant),
                   StatDescriptor(name: "writer_pid", type: .instant),
                   StatDescriptor(name: "heartbeat_ns", type: .instant, unit: .seconds, exponent: -9)] + stats
        var offset: UInt32 = 0
        for i in all.indices {
            all[i].offset = offset
            offset += UInt32(all[i].size) * 8
        }
        descriptors = all
    }

    init(id: String, nameSize: Int, parsed: [StatDescriptor]) {
        self.id = id
        self.nameSize = nameSize
        descriptors = parsed
    }

    /// The statistics a writer declared: every descriptor after the three reserved values.
    public var statistics: ArraySlice<StatDescriptor> { descriptors.dropFirst(3) }

    public var descriptorSize: Int { 16 + nameSize }
    public var idOffset: Int { Self.headerSize }
    public var descriptorOffset: Int { idOffset + nameSize }
    public var dataOffset: Int { (descriptorOffset + descriptors.count * descriptorSize + 7) & ~7 }
    public var valueCount: Int { descriptors.reduce(0) { $0 + Int($1.size) } }
    public var fileSize: Int { dataOffset + valueCount * 8 }

    /// Header, id and descriptors, then a zeroed data block.
    public var encoded: [UInt8] {
        var w = NativeWriter()
        w.u32(0)
        w.u32(UInt32(nameSize))
        w.u32(UInt32(descriptors.count))
        w.u32(UInt32(idOffset))
        w.u32(UInt32(descriptorOffset))
        w.u32(UInt32(dataOffset))
        w.name(id, nameSize)
        for d in descriptors {
            w.u32(d.flags)
            w.u16(UInt16(bitPattern: d.exponent))
            w.u16(d.size)
            w.u32(d.offset)
            w.u32(d.bucketSize)
            w.name(d.name, nameSize)
        }
        w.zeros(fileSize - w.out.count)
        return w.out
    }

    /// Parses and checks a header and descriptors (the file may come from anyone).
    public static func parse(_ b: [UInt8]) throws(StatsError) -> StatsLayout {
        guard b.count >= headerSize else { throw .malformed("\(b.count) bytes: shorter than the 24-byte header") }
        let r = NativeReader(b)
        let flags = r.u32(0), nameSize = Int(r.u32(4)), count = Int(r.u32(8))
        let idOffset = Int(r.u32(12)), descOffset = Int(r.u32(16)), dataOffset = Int(r.u32(20))
        guard flags == 0 else { throw .malformed("header flags 0x\(String(flags, radix: 16)) (only 0 is defined)") }
        guard (8...256).contains(nameSize) else { throw .malformed("name_size \(nameSize) out of 8...256") }
        guard count <= 65536 else { throw .malformed("\(count) descriptors") }
        let descSize = 16 + nameSize
        guard idOffset >= headerSize, idOffset + nameSize <= b.count,
              descOffset >= headerSize, descOffset + count * descSize <= b.count,
              dataOffset >= descOffset + count * descSize, dataOffset % 8 == 0, dataOffset <= b.count else {
            throw .malformed("offsets id \(idOffset), descriptors \(descOffset), data \(dataOffset) do not fit \(b.count) bytes")
        }
        let dataBytes = b.count - dataOffset
        var ds: [StatDescriptor] = []
        // Values lie back to back in descriptor order, as the writer lays them out: no overlap, no gap,
        // so the data block a reader copies is exactly the values the descriptors name.
        var next = 0
        for i in 0..<count {
            let at = descOffset + i * descSize
            let f = r.u32(at)
            guard let type = StatType(rawValue: f & 0xF), let unit = StatUnit(rawValue: f >> 4 & 0xF),
                  let base = StatBase(rawValue: f >> 8 & 0xF), f >> 12 == 0 else {
                throw .malformed("descriptor \(i): flags 0x\(String(f, radix: 16)) name no type/unit/base")
            }
            let d = StatDescriptor(name: r.name(at + 16, nameSize), type: type, unit: unit, base: base,
                                   exponent: Int16(bitPattern: r.u16(at + 4)), size: r.u16(at + 6), offset: r.u32(at + 8),
                                   bucketSize: r.u32(at + 12))
            guard d.offset % 8 == 0, Int(d.offset) + Int(d.size) * 8 <= dataBytes, d.size > 0 else {
                throw .malformed("descriptor '\(d.name)': \(d.size) value(s) at \(d.offset) outside the \(dataBytes)-byte data block")
            }
            guard Int(d.offset) == next else {
                throw .malformed("descriptor '\(d.name)': values at \(d.offset), expected \(next) (right after the previous descriptor's)")
            }
            next += Int(d.size) * 8
            ds.append(d)
        }
        let layout = StatsLayout(id: r.name(idOffset, nameSize), nameSize: nameSize, parsed: ds)
        guard layout.dataOffset == dataOffset, layout.fileSize <= b.count else {
            throw .malformed("data at \(dataOffset) with \(layout.valueCount) values: expected data at \(layout.dataOffset) within \(b.count) bytes")
        }
        guard ds.count >= 3, ds[seqIndex].name == "seqcount", ds[pidIndex].name == "writer_pid",
              ds[heartbeatIndex].name == "heartbeat_ns", ds[0].offset == 0, ds[1].offset == 8, ds[2].offset == 16 else {
            throw .malformed("the first descriptors are not seqcount, writer_pid, heartbeat_ns at 0, 8, 16: not a virtio-swift region")
        }
        return layout
    }
}

/// What went wrong with a statistics region.
public enum StatsError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(String)
    case io(String)
    /// The writer never left an update in a consistent state while we tried.
    case busy(tries: Int)

    public var description: String {
        switch self {
        case let .malformed(why): "statistics region is malformed: \(why)"
        case let .io(why): why
        case let .busy(n): "statistics region: no consistent snapshot in \(n) tries (the writer died mid-update, or updates without pause)"
        }
    }
}

/// Native-endian writer (the region is read on the machine that wrote it, as KVM's is).
struct NativeWriter {
    var out: [UInt8] = []
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v) { out.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v) { out.append(contentsOf: $0) } }
    mutating func zeros(_ n: Int) { out.append(contentsOf: repeatElement(0, count: max(0, n))) }
    /// A NUL-padded name of exactly `size` bytes (cut to size - 1 to keep the NUL).
    mutating func name(_ s: String, _ size: Int) {
        let b = Array(s.utf8.prefix(size - 1))
        out.append(contentsOf: b)
        zeros(size - b.count)
    }
}

struct NativeReader {
    let b: [UInt8]
    init(_ b: [UInt8]) { self.b = b }
    func u16(_ at: Int) -> UInt16 { b[at..<at + 2].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } }
    func u32(_ at: Int) -> UInt32 { b[at..<at + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
    func name(_ at: Int, _ size: Int) -> String {
        let raw = b[at..<at + size]
        return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}
