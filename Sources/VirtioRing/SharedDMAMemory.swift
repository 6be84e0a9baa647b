import CShim
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// DMA memory shared with a device in another process: one memfd, mapped here and handed to the
/// peer (vfio-user DMA_MAP, a vhost-user memory table), which maps the same pages. Bump
/// allocation like `DMAArena`; device addresses start at `deviceBase`, not at the CPU address.
public final class SharedDMAMemory: DMAAllocator, @unchecked Sendable {
    public let fd: Int32
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let deviceBase: UInt64
    private let next = Mutex<Int>(0)

    public init(size: Int, deviceBase: UInt64 = 0x1_0000_0000) throws(DMAError) {
        let page = 4096
        let rounded = (size + page - 1) / page * page
        let fd = cshim_memfd_create("virtio-swift-dma")
        guard fd >= 0 else { throw .mapFailed(errno: errno) }
        guard ftruncate(fd, off_t(rounded)) == 0, let p = mmap(nil, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              p != MAP_FAILED else {
            let e = errno
            close(fd)
            throw .mapFailed(errno: e)
        }
        self.fd = fd
        base = p
        self.size = rounded
        self.deviceBase = deviceBase
    }

    deinit {
        munmap(base, size)
        close(fd)
    }

    public func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        let offset = try bumpAllocate(next, size: size, length: length, alignment: alignment)
        (base + offset).initializeMemory(as: UInt8.self, repeating: 0, count: length)
        return DMARegion(pointer: base + offset, deviceAddress: deviceBase + UInt64(offset), length: length)
    }
}
