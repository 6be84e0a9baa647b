/// Little-endian field writer (admin commands, statistics entries, vfio-user messages).
public struct LEWriter: Sendable {
    public private(set) var out: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { out.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    public mutating func zeros(_ n: Int) { out.append(contentsOf: repeatElement(0, count: n)) }
    public mutating func bytes(_ b: [UInt8]) { out.append(contentsOf: b) }
    public mutating func pad(to multiple: Int) { zeros((multiple - out.count % multiple) % multiple) }
}

/// Little-endian field reader over bytes from elsewhere: fields past the end read as zero
/// (as `admin.tex` asks of results a device cut short; callers check lengths where that matters).
public struct LEReader: Sendable {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func u8(_ at: Int) -> UInt8 { at >= 0 && at < bytes.count ? bytes[at] : 0 }
    public func u16(_ at: Int) -> UInt16 { UInt16(u8(at)) | UInt16(u8(at + 1)) << 8 }
    public func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
    public func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
    /// `count` bytes from `at`, zero-filled past the end.
    public func slice(_ at: Int, _ count: Int) -> [UInt8] { (0..<count).map { u8(at + $0) } }
}
