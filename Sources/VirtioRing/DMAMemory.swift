#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A region of DMA memory: where the CPU sees it and the address the device uses.
public struct DMARegion: @unchecked Sendable, Equatable {
    public let pointer: UnsafeMutableRawPointer
    public let deviceAddress: UInt64
    public let length: Int
    public init(pointer: UnsafeMutableRawPointer, deviceAddress: UInt64, length: Int) {
        self.pointer = pointer
        self.deviceAddress = deviceAddress
        self.length = length
    }
    public var area: RingArea { RingArea(pointer: pointer, deviceAddress: deviceAddress) }
    /// A sub-range of this region.
    public func slice(offset: Int, length: Int) -> DMARegion {
        precondition(offset >= 0 && length >= 0 && offset + length <= self.length, "slice outside region")
        return DMARegion(pointer: pointer + offset, deviceAddress: deviceAddress + UInt64(offset), length: length)
    }
}

/// Something that hands out DMA memory to a driver (an arena here; VFIO-mapped memory later).
public protocol DMAAllocator: AnyObject, Sendable {
    /// Zeroed memory of `length` bytes aligned to `alignment` in both CPU and device address.
    func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion
}

/// How the device side reaches memory by device address (the device's view of DMA).
public protocol DeviceMemory {
    /// A pointer to `length` bytes at `address`, or nil when any byte lies outside memory the device may touch.
    func pointer(at address: UInt64, length: Int) -> UnsafeMutableRawPointer?
}

public enum DMAError: Error, Sendable, Equatable, CustomStringConvertible {
    case exhausted(requested: Int, available: Int)
    case mapFailed(errno: Int32)
    case invalidRequest(String)
    public var description: String {
        switch self {
        case let .exhausted(r, a): "DMA arena exhausted: \(r) bytes requested, \(a) available"
        case let .mapFailed(e): "mmap of DMA arena failed: \(String(cString: strerror(e)))"
        case let .invalidRequest(why): "invalid DMA request: \(why)"
        }
    }
}

/// Bump allocation of `length` bytes aligned to `alignment` within `size` bytes: the start offset.
/// DMA memory is allocated once per device lifetime here, never freed piecemeal.
public func bumpAllocate(_ cursor: borrowing Mutex<Int>, size: Int, length: Int, alignment: Int) throws(DMAError) -> Int {
    guard length > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
        throw .invalidRequest("length \(length) alignment \(alignment)")
    }
    let result: Result<Int, DMAError> = cursor.withLock { cursor in
        let start = (cursor + alignment - 1) & ~(alignment - 1)
        guard start + length <= size else { return .failure(.exhausted(requested: length, available: size - cursor)) }
        cursor = start + length
        return .success(start)
    }
    return try result.get()
}

/// Anonymous memory with device addresses starting at `deviceBase` (deliberately not the
/// CPU address, so a pointer passed where an address belongs is caught). Allocation is a
/// bump under a lock; translation is lock-free bounds arithmetic.
public final class DMAArena: DMAAllocator, DeviceMemory, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let deviceBase: UInt64
    private let next = Mutex<Int>(0)
    private let owned: Bool
    /// What keeps external memory mapped while this arena exists (nil: its mapper guarantees it).
    private let owner: AnyObject?

    /// Memory mapped by someone else (a vfio-user client's shared memory): translated, never unmapped
    /// here. `owner`, when given, is kept alive with the arena (the mapping's owner: it unmaps when freed).
    public init(external pointer: UnsafeMutableRawPointer, size: Int, deviceBase: UInt64, owner: AnyObject? = nil) {
        base = pointer
        self.size = size
        self.deviceBase = deviceBase
        owned = false
        self.owner = owner
    }

    public init(size: Int, deviceBase: UInt64 = 0x1_0000_0000) throws(DMAError) {
        guard size > 0 else { throw .invalidRequest("arena size must be positive") }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let rounded = (size + page - 1) / page * page
        let p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { throw .mapFailed(errno: errno) }
        base = p
        self.size = rounded
        self.deviceBase = deviceBase
        owned = true
        owner = nil
        Self.live.add(1, ordering: .relaxed)
    }

    /// Arenas this process has mapped and not yet unmapped (tests check none outlives its owner).
    public static let live = Atomic<Int>(0)

    deinit {
        if owned {
            munmap(base, size)
            Self.live.subtract(1, ordering: .relaxed)
        }
    }

    public func allocate(length: Int, alignment: Int = 64) throws(DMAError) -> DMARegion {
        let offset = try bumpAllocate(next, size: size, length: length, alignment: alignment)
        let p = base + offset
        p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        return DMARegion(pointer: p, deviceAddress: deviceBase + UInt64(offset), length: length)
    }

    @inlinable
    public func pointer(at address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard address >= deviceBase, length >= 0 else { return nil }
        let offset = address - deviceBase
        guard offset <= UInt64(size), UInt64(length) <= UInt64(size) - offset else { return nil }
        return base + Int(offset)
    }
}
