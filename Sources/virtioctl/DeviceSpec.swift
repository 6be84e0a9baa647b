import ArgumentParser
import VirtioSoftDevice

/// A DEVICE argument: `soft:blk[,key=value...]`, a PCI address (`0000:00:04.0`), or `vfio-user:PATH`.
enum DeviceSpec: Equatable {
    case softBlock(SoftBlockOptions)
    case softBalloon(SoftBalloonOptions)
    case pci(String)
    case vfioUser(VFIOUserSpec)

    static let syntax = "soft:blk[,key=value...], soft:balloon[,key=value...], a PCI address such as 0000:00:04.0, or vfio-user:PATH[,timeout=MS]"

    init(parsing text: String) throws(CLIError) {
        if text.hasPrefix("soft:") {
            let parts = text.dropFirst(5).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            do {
                switch parts.first {
                case "blk": self = .softBlock(try SoftBlockOptions(parsing: Array(parts.dropFirst())))
                case "balloon": self = .softBalloon(try SoftBalloonOptions(parsing: Array(parts.dropFirst())))
                default: throw CLIError("unknown software device '\(parts.first ?? "")' in '\(text)'; software devices: blk, balloon")
                }
            } catch let e as CLIError {
                throw e
            } catch {
                throw CLIError("\(error)")
            }
        } else if text.hasPrefix("vfio-user:") {
            self = .vfioUser(try VFIOUserSpec(parsing: String(text.dropFirst("vfio-user:".count))))
        } else if let address = Self.pciAddress(text) {
            self = .pci(address)
        } else {
            throw CLIError("cannot read device '\(text)'; expected \(Self.syntax)")
        }
    }

    /// `DDDD:BB:DD.F` or `BB:DD.F` (domain 0000), hex, normalised to lower case with the domain.
    static func pciAddress(_ text: String) -> String? {
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
struct VFIOUserSpec: Equatable {
    var path: String
    /// From `timeout=`; nil leaves it to `--peer-timeout`.
    var timeoutMilliseconds: Int?

    init(path: String, timeoutMilliseconds: Int? = nil) {
        self.path = path
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    init(parsing text: String) throws(CLIError) {
        // Keys are the trailing `,name=value` pieces; anything before them is the path, commas included.
        var parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var keys: [String] = []
        while parts.count > 1, let last = parts.last, let eq = last.firstIndex(of: "="),
              !last[..<eq].isEmpty, last[..<eq].allSatisfy({ $0.isLetter || $0 == "_" }) {
            keys.insert(parts.removeLast(), at: 0)
        }
        path = parts.joined(separator: ",")
        parts = keys
        guard !path.isEmpty else { throw CLIError("vfio-user: needs a socket path, e.g. vfio-user:/run/blk.sock") }
        for part in parts {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, kv[0] == "timeout" else {
                throw CLIError("vfio-user:\(text): unknown key '\(part)'; vfio-user keys: timeout=MS (how long a reply may take)")
            }
            guard let ms = Int(kv[1]), peerTimeoutRange.contains(ms) else {
                throw CLIError("vfio-user:\(text): timeout=\(kv[1]): expected milliseconds in \(peerTimeoutRange)")
            }
            timeoutMilliseconds = ms
        }
    }
}

/// `--peer-timeout MS`, for verbs that can reach a device through a socket peer.
struct PeerTimeoutOption: ParsableArguments {
    @Option(name: .customLong("peer-timeout"),
            help: "How long to wait for a socket peer's reply (vfio-user), in milliseconds (default 5000); past it the peer is taken for gone.")
    var milliseconds: Int?

    func validate() throws {
        if let milliseconds, !peerTimeoutRange.contains(milliseconds) {
            throw ValidationError("--peer-timeout must be in \(peerTimeoutRange) ms")
        }
    }
}

/// Bounds a user may set on waiting for a peer (`--peer-timeout`, `timeout=`), in milliseconds.
let peerTimeoutRange = 10...600_000

/// An error the CLI reports as-is on stderr, exiting non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
