import VirtioCore

/// `vhost-user:PATH[,type=blk][,timeout=MS][,queue_size=N]`: the backend's socket, what device it
/// is (vhost-user does not say), how long a reply may take, and the largest ring to ask for.
public struct VhostUserSpec: Equatable, Sendable {
    public var path: String
    public var deviceType: VirtioDeviceType = .block
    /// From `timeout=`; nil leaves it to `--peer-timeout`.
    public var timeoutMilliseconds: Int?
    /// From `queue_size=`: the ring size offered to the driver as the maximum (256 by default).
    public var maxQueueSize: Int?

    public static let keys = "type=blk (the device behind the socket), timeout=MS (how long a reply may take), queue_size=N (the largest ring to ask for, 1-32768; 256 by default)"

    public init(path: String) { self.path = path }

    public init(parsing text: String) throws(AttachError) {
        let (path, keys) = splitSocketSpelling(text)
        self.path = path
        guard !path.isEmpty else { throw .transportKey("vhost-user: needs a socket path, e.g. vhost-user:/run/blk.sock") }
        for (key, value) in keys {
            switch key {
            case "timeout": timeoutMilliseconds = try parseTimeout(value, in: "vhost-user:\(text)")
            case "type":
                guard value == "blk" else {
                    throw .transportKey("vhost-user:\(text): type=\(value): expected blk (the only device class driven over vhost-user so far)")
                }
                deviceType = .block
            case "queue_size":
                guard let n = Int(value), (1...32768).contains(n) else {
                    throw .transportKey("vhost-user:\(text): queue_size=\(value): expected 1 to 32768")
                }
                maxQueueSize = n
            default:
                throw .transportKey("vhost-user:\(text): unknown key '\(key)=\(value)'; vhost-user keys: \(Self.keys)")
            }
        }
    }
}
