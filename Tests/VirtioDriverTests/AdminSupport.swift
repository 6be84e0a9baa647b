import VirtioCore
import VirtioPCI
import VirtioSoftDevice

/// An owner function driven for its admin queue only: negotiated, admin queues set up, DRIVER_OK.
struct AdminOwner {
    let function: SoftPCIFunction<SoftBlock>
    let device: VirtioDevice<SoftTransport>
    let channel: AdminChannel<SoftTransport>

    init(_ spec: String, timeoutMilliseconds: Int = 5_000) throws {
        function = try softBlock(spec)
        device = VirtioDevice(transport: try PCITransport(function: function))
        try device.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
        channel = try AdminChannel(device: device)
        channel.timeoutMilliseconds = timeoutMilliseconds
        try device.driverOK()
    }

    var admin: SoftAdmin { function.admin! }
    /// Opcodes the device received, in order.
    var received: [UInt16] {
        admin.log.events.compactMap { if case let .adminCommand(op, _, _) = $0 { op } else { nil } }
    }
    func member(_ vf: Int) -> SoftPCIFunction<SoftBlock> { admin.members[vf - 1] }
}
