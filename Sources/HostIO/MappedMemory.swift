#if canImport(Glibc)
import Glibc
#endif

/// Memory this process mapped (a peer's shared memory), unmapped once, when its last holder lets
/// go: a device thread still holding it mid-round keeps it mapped.
public final class MappedMemory: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let length: Int
    /// The address the peer's device addresses start at.
    public let address: UInt64

    public init(pointer: UnsafeMutableRawPointer, length: Int, address: UInt64) {
        self.pointer = pointer
        self.length = length
        self.address = address
    }

    deinit { munmap(pointer, length) }
}
