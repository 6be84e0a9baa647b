import VirtioSoftDevice

/// A DEVICE argument: `soft:blk[,key=value...]`, a PCI address (`0000:00:04.0`), `vfio-user:PATH` or `vhost-user:PATH`.
public enum DeviceSpec: Equatable, Sendable {
    case softBlock(SoftBlockOptions)
    case softBalloon(SoftBalloonOptions)
    case softNet(SoftNetOptions)
    case pci(String)
    case vfioUser(VFIOUserSpec)
    case vhostUser(VhostUserSpec)

    /// The software devices `soft:` can name.
    public static let softKinds = ["blk", "net", "balloon"]

    public static let syntax = "soft:blk[,key=value...], soft:net[,key=value...], soft:balloon[,key=value...], a PCI address such as 0000:00:04.0, vfio-user:PATH[,timeout=MS], or vhost-user:PATH[,type=blk][,timeout=MS][,queue_size=N]"

    public init(parsing text: String) throws(AttachError) {
        if text.hasPrefix("soft:") {
            let parts = text.dropFirst(5).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard let kind = parts.first, Self.softKinds.contains(kind) else {
                throw .unknownSoftDevice(parts.first ?? "", in: text)
            }
            do throws(SoftDeviceError) {
                if kind == "blk" {
                    self = .softBlock(try SoftBlockOptions(parsing: Array(parts.dropFirst())))
                } else if kind == "net" {
                    self = .softNet(try SoftNetOptions(parsing: Array(parts.dropFirst())))
                } else {
                    self = .softBalloon(try SoftBalloonOptions(parsing: Array(parts.dropFirst())))
                }
            } catch {
                throw .softDevice(text, error)
            }
        } else if text.hasPrefix("vfio-user:") {
            self = .vfioUser(try VFIOUserSpec(parsing: String(text.dropFirst("vfio-user:".count))))
        } else if text.hasPrefix("vhost-user:") {
            self = .vhostUser(try VhostUserSpec(parsing: String(text.dropFirst("vhost-user:".count))))
        } else if let address = Self.pciAddress(text) {
            self = .pci(address)
        } else {
            throw .unknownSpelling(text)
        }
    }

    /// `DDDD:BB:DD.F` or `BB:DD.F` (domain 0000), hex, normalised to lower case with the domain.
    public static func pciAddress(_ text: String) -> String? {
        let parts = text.lowercased().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let (domain, bus, devfn): (String, String, String)
        switch parts.count {
        case 3: (domain, bus, devfn) = (parts[0], parts[1], parts[2])
        case 2: (domain, bus, devfn) = ("0000", parts[0], parts[1])
        default: return nil
        }
        let df = devfn.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard df.count == 2, domain.count == 4, bus.count == 2, df[0].count == 2, df[1].count == 1,
              let _ = UInt16(domain, radix: 16), let _ = UInt8(bus, radix: 16),
              let dev = UInt8(df[0], radix: 16), dev < 32, let fn = UInt8(df[1], radix: 16), fn < 8 else { return nil }
        return "\(domain):\(bus):\(df[0]).\(df[1])"
    }
}

/// `vfio-user:PATH[,timeout=MS]`: the server's socket, and how long a reply may take.
public struct VFIOUserSpec: Equatable, Sendable {
    public var path: String
    /// From `timeout=`; nil leaves it to `--peer-timeout`.
    public var timeoutMilliseconds: Int?

    public init(path: String, timeoutMilliseconds: Int? = nil) {
        self.path = path
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    public init(parsing text: String) throws(AttachError) {
        let (path, keys) = splitSocketSpelling(text)
        self.path = path
        guard !path.isEmpty else { throw .transportKey("vfio-user: needs a socket path, e.g. vfio-user:/run/blk.sock") }
        for (key, value) in keys {
            guard key == "timeout" else {
                throw .transportKey("vfio-user:\(text): unknown key '\(key)=\(value)'; vfio-user keys: timeout=MS (how long a reply may take)")
            }
            timeoutMilliseconds = try parseTimeout(value, in: "vfio-user:\(text)")
        }
    }
}

/// A socket spelling's path and its trailing `,name=value` keys (anything before them is the path, commas included).
func splitSocketSpelling(_ text: String) -> (path: String, keys: [(String, String)]) {
    var parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    var keys: [(String, String)] = []
    while parts.count > 1, let last = parts.last, let eq = last.firstIndex(of: "="),
          !last[..<eq].isEmpty, last[..<eq].allSatisfy({ $0.isLetter || $0 == "_" }) {
        parts.removeLast()
        keys.insert((String(last[..<eq]), String(last[last.index(after: eq)...])), at: 0)
    }
    return (parts.joined(separator: ","), keys)
}

/// `timeout=MS` of a socket spelling.
func parseTimeout(_ value: String, in spelling: String) throws(AttachError) -> Int {
    guard let ms = Int(value), peerTimeoutRange.contains(ms) else {
        throw .transportKey("\(spelling): timeout=\(value): expected milliseconds in \(peerTimeoutRange)")
    }
    return ms
}

/// Bounds a user may set on waiting for a peer (`--peer-timeout`, `timeout=`), in milliseconds.
public let peerTimeoutRange = 10...600_000
