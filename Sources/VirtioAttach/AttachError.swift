import VirtioSoftDevice

/// Why a device spelling or a common option could not be turned into an opened device; each case
/// says what to type instead. Nothing has been opened when one of these is thrown.
public enum AttachError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The DEVICE text names no transport or device this tool knows.
    case unknownSpelling(String)
    /// `soft:KIND` with a kind there is no software device for.
    case unknownSoftDevice(String, in: String)
    /// A `soft:` device's keys did not parse.
    case softDevice(String, SoftDeviceError)
    /// A transport's `key=value` pieces or path were wrong.
    case transportKey(String)
    /// `--dma`, `--peer-timeout`, `--queues`...: out of range.
    case option(String)
    /// A feature name in `--feature-off` / `--require` that the device type does not have.
    case unknownFeature(flag: String, name: String, deviceType: String, known: [String])
    /// The device opened but is not the class the verb drives.
    case wrongDeviceClass(device: String, is: String, verb: String)
    /// The software device stopped itself (its register model met something it cannot go on from).
    case softDeviceFailed(String)
    /// The verb cannot use this spelling (e.g. a fault option on a real device).
    case notSupported(String)

    public var description: String {
        switch self {
        case let .unknownSpelling(text): "cannot read device '\(text)'; expected \(DeviceSpec.syntax)"
        case let .unknownSoftDevice(kind, text):
            "unknown software device '\(kind)' in '\(text)'; software devices: \(DeviceSpec.softKinds.joined(separator: ", "))"
        case let .softDevice(_, e): "\(e)"
        case let .transportKey(why): why
        case let .option(why): why
        case let .unknownFeature(flag, name, type, known):
            "\(flag): unknown feature '\(name)'; known for \(type): \(known.joined(separator: ", ")) (or a bit number 0-63)"
        case let .wrongDeviceClass(device, kind, verb): "\(device) is a \(kind); \(verb)"
        case let .softDeviceFailed(why): "soft:blk failed: \(why)"
        case let .notSupported(why): why
        }
    }
}
