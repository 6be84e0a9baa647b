/// The device status byte (`content.tex` "Device Status Field").
public struct DeviceStatus: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let acknowledge = DeviceStatus(rawValue: 1)
    public static let driver = DeviceStatus(rawValue: 2)
    public static let driverOK = DeviceStatus(rawValue: 4)
    public static let featuresOK = DeviceStatus(rawValue: 8)
    /// 1.4 draft, only with VIRTIO_F_SUSPEND (43).
    public static let suspend = DeviceStatus(rawValue: 16)
    public static let deviceNeedsReset = DeviceStatus(rawValue: 64)
    public static let failed = DeviceStatus(rawValue: 128)

    static let names: [(DeviceStatus, String)] = [
        (.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.featuresOK, "FEATURES_OK"), (.driverOK, "DRIVER_OK"),
        (.suspend, "SUSPEND"), (.deviceNeedsReset, "DEVICE_NEEDS_RESET"), (.failed, "FAILED"),
    ]

    /// Names of the set bits (`RESET` for 0), e.g. `["ACKNOWLEDGE", "DRIVER"]`.
    public var names: [String] {
        if rawValue == 0 { return ["RESET"] }
        var out = Self.names.filter { contains($0.0) }.map(\.1)
        let unknown = rawValue & ~Self.names.reduce(0) { $0 | $1.0.rawValue }
        if unknown != 0 { out.append("unknown 0x" + String(unknown, radix: 16)) }
        return out
    }

    public var description: String { names.joined(separator: "|") }
}
