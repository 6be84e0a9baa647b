import CShim
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// Why a PCI function access failed.
public enum PCIError: Error, Sendable, Equatable, CustomStringConvertible {
    case outOfRange(what: String, offset: Int, width: Int, limit: Int)
    case badWidth(Int)
    case noSuchBAR(Int)
    case io(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .outOfRange(what, o, w, l): "\(what) access at 0x\(String(o, radix: 16)) (\(w) bytes) is outside its \(l) bytes"
        case let .badWidth(w): "unsupported access width \(w)"
        case let .noSuchBAR(b): "BAR \(b) is not implemented"
        case let .io(why): why
        case let .unsupported(why): why
        }
    }
}

/// One base address register as the function reports it.
public struct BARInfo: @unchecked Sendable {
    public let size: Int
    public let isMemory: Bool
    /// Where the BAR is mapped into this process, or nil when it is reached through `barRead`/`barWrite`.
    public let mapped: UnsafeMutableRawPointer?
    /// The byte ranges of the BAR that `mapped` backs: all of it, or the areas of a sparse
    /// mapping (VFIO leaves holes, e.g. over an MSI-X table); the rest goes through calls.
    public let mappedRanges: [Range<Int>]
    public init(size: Int, isMemory: Bool, mapped: UnsafeMutableRawPointer?, mappedRanges: [Range<Int>]? = nil) {
        self.size = size
        self.isMemory = isMemory
        self.mapped = mapped
        self.mappedRanges = mapped == nil ? [] : mappedRanges ?? [0..<size]
    }

    /// A pointer to [offset, offset+length) when one mapped range holds all of it.
    public func pointer(offset: Int, length: Int) -> UnsafeMutableRawPointer? {
        guard let mapped, offset >= 0, length >= 0,
              mappedRanges.contains(where: { $0.lowerBound <= offset && offset + length <= $0.upperBound }) else { return nil }
        return mapped + offset
    }
}

/// A PCI function the driver owns: the seam between the virtio PCI transport and a backend
/// (kernel VFIO, vfio-user, or the in-process software device).
public protocol PCIFunction: AnyObject, Sendable {
    /// How a person names it: `0000:00:04.0`, `soft:blk`.
    var address: String { get }
    /// Configuration space access; `width` is 1, 2 or 4.
    func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32
    func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError)
    /// BAR `index` (0-5), or nil when not implemented.
    func bar(_ index: Int) -> BARInfo?
    /// Register access through calls, for BARs that are not mapped; `width` is 1, 2, 4 or 8.
    func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64
    func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError)
    /// Memory the function can DMA to.
    var dma: any DMAAllocator { get }
    /// Enables MSI-X with `vectors` vectors; returns one eventfd per vector.
    func enableMSIX(vectors: Int) throws(PCIError) -> [Int32]
    /// Disables interrupts and closes their eventfds.
    func disableInterrupts()
    /// Facts about the backend for `virtioctl info` (mappings, reset support).
    var backendDetails: [(String, String)] { get }
}

extension PCIFunction {
    public var backendDetails: [(String, String)] { [] }
}

/// The offset of PCIe extended capability `id`, or nil (no extended space, or not there).
/// A config space of 256 bytes answers the first read with an error or 0; both mean "none".
public func findExtendedCapability<F: PCIFunction>(_ f: F, id: UInt16) throws(PCIError) -> Int? {
    var at = PCIConfig.extendedStart
    var seen = 0
    while at >= PCIConfig.extendedStart, at + 4 <= PCIConfig.extendedEnd, seen < 512 {
        let header: UInt32
        do { header = try f.configRead(offset: at, width: 4) } catch {
            if at == PCIConfig.extendedStart { return nil }
            throw error
        }
        if header == 0 || header == 0xFFFF_FFFF { return nil }
        if UInt16(truncatingIfNeeded: header) == id { return at }
        at = Int(header >> 20) & ~3
        seen += 1
    }
    return nil
}
