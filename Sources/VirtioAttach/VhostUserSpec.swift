import VirtioCore
import VirtioDrivers

/// `vhost-user:PATH[,type=blk|net][,timeout=MS][,queue_size=N][,queues=N][,mac=M]`: the backend's
/// socket, what device it is (vhost-user does not say), how long a reply may take, the largest ring
/// to ask for, and for net the queue pairs and the MAC the frontend's emulated config shows.
public struct VhostUserSpec: Equatable, Sendable {
    public var path: String
    public var deviceType: VirtioDeviceType = .block
    /// From `timeout=`; nil leaves it to `--peer-timeout`.
    public var timeoutMilliseconds: Int?
    /// From `queue_size=`: the ring size offered to the driver as the maximum (256 by default).
    public var maxQueueSize: Int?
    /// net: from `queues=` (queue pairs; 1 by default).
    public var netPairs: Int?
    /// net: from `mac=`.
    public var mac: MACAddress?

    public static let keys = "type=blk|net (the device behind the socket; blk by default), timeout=MS (how long a reply may take), queue_size=N (the largest ring to ask for, 1-32768; 256 by default), queues=N (net: queue pairs, 1-128), mac=52:54:00:12:34:56 (net: the MAC the frontend's config shows; random by default)"

    public init(path: String) { self.path = path }

    public init(parsing text: String) throws(AttachError) {
        let (path, keys) = splitSocketSpelling(text)
        self.path = path
        guard !path.isEmpty else { throw .transportKey("vhost-user: needs a socket path, e.g. vhost-user:/run/blk.sock") }
        for (key, value) in keys {
            switch key {
            case "timeout": timeoutMilliseconds = try parseTimeout(value, in: "vhost-user:\(text)")
            case "type":
                switch value {
                case "blk": deviceType = .block
                case "net": deviceType = .net
                default: throw .transportKey("vhost-user:\(text): type=\(value): expected blk or net (the device classes driven over vhost-user)")
                }
            case "queues":
                guard let n = Int(value), (1...128).contains(n) else {
                    throw .transportKey("vhost-user:\(text): queues=\(value): expected 1 to 128 queue pairs")
                }
                netPairs = n
            case "mac":
                guard let m = MACAddress(parsing: value), !m.isMulticast, !m.isZero else {
                    throw .transportKey("vhost-user:\(text): mac=\(value): expected a unicast address such as 02:00:00:00:00:01")
                }
                mac = m
            case "queue_size":
                guard let n = Int(value), (1...32768).contains(n) else {
                    throw .transportKey("vhost-user:\(text): queue_size=\(value): expected 1 to 32768")
                }
                maxQueueSize = n
            default:
                throw .transportKey("vhost-user:\(text): unknown key '\(key)=\(value)'; vhost-user keys: \(Self.keys)")
            }
        }
        if deviceType != .net, netPairs != nil || mac != nil {
            throw .transportKey("vhost-user:\(text): queues= and mac= are for type=net")
        }
    }
}
