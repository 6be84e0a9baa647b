#if canImport(Glibc)
import Glibc
#endif

/// A frontend's memory table, mapped into this process: one contiguous reservation spanning the
/// regions' guest-physical range, each region mapped over it at its offset from the lowest
/// address (so the device reaches guest-physical `a` at `base + (a - guestBase)` with one bounds
/// check). Gaps between regions stay private zero pages: a descriptor pointing into one reads
/// zeros and its writes go nowhere, so a hostile table cannot make the device fault (and the gaps
/// are capped, so such writes cannot take more than 2 GiB).
public final class BackendMemory: @unchecked Sendable {
    public let regions: [VhostMemoryRegion]
    public let base: UnsafeMutableRawPointer
    /// Bytes from the lowest region's start to the highest region's end.
    public let span: Int
    public let guestBase: UInt64
    /// The most guest-physical space one table may span (the reservation is virtual, never touched in the gaps).
    public static let maxSpan: UInt64 = 1 << 36
    /// The most hole space between regions (QEMU's largest, below 4 GiB for PCI, is 0.5-1.25 GiB).
    public static let maxGaps: UInt64 = 2 << 30

    /// Checks and maps `table` with one descriptor per region (the caller keeps ownership of the fds).
    /// Throws a sentence naming what is wrong with the table.
    public init(table: VhostMemoryTable, fds: [Int32]) throws(VhostUserDecodeError) {
        let rs = table.regions
        guard fds.count == rs.count else {
            throw VhostUserDecodeError("SET_MEM_TABLE carries \(fds.count) file descriptor(s) for \(rs.count) region(s) (one per region)")
        }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        for (i, r) in rs.enumerated() {
            guard r.size > 0, r.size % page == 0, r.guestAddress % page == 0, r.mmapOffset % page == 0 else {
                throw VhostUserDecodeError("region \(i): size 0x\(String(r.size, radix: 16)), guest address 0x\(String(r.guestAddress, radix: 16)) and mmap offset 0x\(String(r.mmapOffset, radix: 16)) must be non-zero multiples of the \(page)-byte page")
            }
            guard r.size <= UInt64(Int64.max), r.guestAddress <= UInt64.max - r.size, r.userAddress <= UInt64.max - r.size,
                  r.mmapOffset <= UInt64(Int64.max) - r.size else {
                throw VhostUserDecodeError("region \(i) wraps around the address space")
            }
            for (j, o) in rs.enumerated() where j < i {
                if r.guestAddress < o.guestAddress + o.size, o.guestAddress < r.guestAddress + r.size {
                    throw VhostUserDecodeError("regions \(j) and \(i) overlap in guest-physical addresses")
                }
                if r.userAddress < o.userAddress + o.size, o.userAddress < r.userAddress + r.size {
                    throw VhostUserDecodeError("regions \(j) and \(i) overlap in frontend user addresses")
                }
            }
            // A file shorter than the region would raise SIGBUS on the first access past its end.
            var st = stat()
            guard fstat(fds[i], &st) == 0 else { throw VhostUserDecodeError("region \(i): its descriptor cannot be examined: \(String(cString: strerror(errno)))") }
            let regular = st.st_mode & S_IFMT == S_IFREG
            guard regular, UInt64(st.st_size) >= r.mmapOffset + r.size else {
                throw VhostUserDecodeError(regular
                    ? "region \(i): its file is \(st.st_size) bytes, shorter than mmap offset + size (\(r.mmapOffset + r.size))"
                    : "region \(i): its descriptor is not a memory file (memfd, /dev/shm or hugetlbfs)")
            }
        }
        let low = rs.map(\.guestAddress).min()!, high = rs.map { $0.guestAddress + $0.size }.max()!
        guard high - low <= Self.maxSpan else {
            throw VhostUserDecodeError("the regions span 0x\(String(high - low, radix: 16)) bytes of guest-physical space (at most 0x\(String(Self.maxSpan, radix: 16)))")
        }
        // Gaps are private memory a hostile descriptor could fill: at most maxGaps of them.
        let gaps = (high - low) - rs.reduce(0) { $0 + $1.size }
        guard gaps <= Self.maxGaps else {
            throw VhostUserDecodeError("the regions leave 0x\(String(gaps, radix: 16)) bytes of holes between them (at most 0x\(String(Self.maxGaps, radix: 16)))")
        }
        let span = Int(high - low)
        guard let reserve = mmap(nil, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              reserve != MAP_FAILED else {
            throw VhostUserDecodeError("cannot reserve \(span) bytes for the memory table: \(String(cString: strerror(errno)))")
        }
        for (i, r) in rs.enumerated() {
            let at = reserve + Int(r.guestAddress - low)
            let p = mmap(at, Int(r.size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fds[i], off_t(r.mmapOffset))
            guard p == at else {
                let e = errno
                munmap(reserve, span)
                throw VhostUserDecodeError("region \(i) cannot be mapped: \(String(cString: strerror(e)))")
            }
        }
        regions = rs
        base = reserve
        self.span = span
        guestBase = low
    }

    deinit { munmap(base, span) }

    /// The guest-physical address of frontend user address `user`, when `length` bytes from it
    /// lie inside one region (ring addresses travel as user addresses).
    public func guestAddress(user: UInt64, length: Int) -> UInt64? {
        for r in regions where user >= r.userAddress && user - r.userAddress <= r.size && UInt64(length) <= r.size - (user - r.userAddress) {
            return r.guestAddress + (user - r.userAddress)
        }
        return nil
    }

    /// A pointer to `length` bytes at guest-physical `address` inside one region, else nil.
    public func pointer(guest address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        for r in regions where address >= r.guestAddress && address - r.guestAddress <= r.size
            && UInt64(length) <= r.size - (address - r.guestAddress) {
            return base + Int(address - guestBase)
        }
        return nil
    }
}
