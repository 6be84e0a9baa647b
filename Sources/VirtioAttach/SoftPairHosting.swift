import Dispatch
import Synchronization
import VirtioSoftDevice

extension DeviceOpening {
    /// The software functions a spelling names: one, or the two ends of `soft:net,backend=pair`
    /// (to serve each on a socket of its own).
    public static func softFunctions(_ spec: DeviceSpec) throws -> [SoftFunction] {
        if case let .softNet(o) = spec, o.backend == .pair {
            let (a, b) = try SoftPCIFunction.netPair(o)
            return [.net(a), .net(b)]
        }
        return [try softFunction(spec)]
    }
}

/// Several software functions served at once, each on its socket and its own thread.
public enum SoftServing {
    /// Serves `functions[i]` on `paths[i]` (vhost-user or vfio-user) until `stop` says so for
    /// each; returns the clients each served. The first error any of them hits is thrown once all ended.
    public static func serve(_ functions: [SoftFunction], paths: [String], vhostUser: Bool, options: HostingOptions,
                             stop: @escaping @Sendable (_ served: Int) -> Bool) throws -> [Int] {
        precondition(functions.count == paths.count)
        final class Outcome: @unchecked Sendable {
            let state = Mutex<(served: [Int], error: (any Error)?)>(([], nil))
        }
        let outcome = Outcome()
        outcome.state.withLock { $0.served = Array(repeating: 0, count: paths.count) }
        let group = DispatchGroup()
        for i in functions.indices {
            let work = UnsafeSendable((functions[i], options))
            let path = paths[i]
            DispatchQueue.global().async(group: group) {
                let (f, o) = work.value
                do {
                    let n = vhostUser ? try f.serveVhostUser(path: path, options: o, stop: stop)
                                      : try f.serveVFIOUser(path: path, options: o, stop: stop)
                    outcome.state.withLock { $0.served[i] = n }
                } catch {
                    outcome.state.withLock { if $0.error == nil { $0.error = error } }
                }
            }
        }
        group.wait()
        let (served, error) = outcome.state.withLock { ($0.served, $0.error) }
        if let error { throw error }
        return served
    }
}

/// Hands a value to another thread that the type system cannot prove safe (each is used by one thread).
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
