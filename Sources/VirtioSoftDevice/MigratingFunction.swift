import Synchronization
import VirtioPCI
import VirtioRing
import VirtioWire

/// What a VMM gives a guest across a live migration: one PCI function whose backing member
/// changes underneath the driver. `migrate(to:)` is the switch-over, done while both members are
/// stopped: it restores the standard PCI configuration the device parts do not carry (the command
/// register: memory decoding and bus mastering), as a VMM restores it from its own saved state.
public final class MigratingFunction: PCIFunction, @unchecked Sendable {
    let current: Mutex<SoftPCIFunction<SoftBlock>>
    public let address: String

    public init(_ first: SoftPCIFunction<SoftBlock>, address: String = "migrating:blk") {
        current = Mutex(first)
        self.address = address
    }

    public var backing: SoftPCIFunction<SoftBlock> { current.withLock { $0 } }

    public func migrate(to next: SoftPCIFunction<SoftBlock>) throws(PCIError) {
        let previous = backing
        let command = try previous.configRead(offset: PCIConfig.command, width: 2)
        try next.configWrite(offset: PCIConfig.command, width: 2, value: command)
        current.withLock { $0 = next }
    }

    public func configRead(offset: Int, width: Int) throws(PCIError) -> UInt32 {
        try backing.configRead(offset: offset, width: width)
    }
    public func configWrite(offset: Int, width: Int, value: UInt32) throws(PCIError) {
        try backing.configWrite(offset: offset, width: width, value: value)
    }
    public func bar(_ index: Int) -> BARInfo? { backing.bar(index) }
    public func barRead(_ index: Int, offset: Int, width: Int) throws(PCIError) -> UInt64 {
        try backing.barRead(index, offset: offset, width: width)
    }
    public func barWrite(_ index: Int, offset: Int, width: Int, value: UInt64) throws(PCIError) {
        try backing.barWrite(index, offset: offset, width: width, value: value)
    }
    public var dma: any DMAAllocator { backing.dma }
    public func enableMSIX(vectors: Int) throws(PCIError) -> [Int32] { try backing.enableMSIX(vectors: vectors) }
    public func disableInterrupts() { backing.disableInterrupts() }
}
