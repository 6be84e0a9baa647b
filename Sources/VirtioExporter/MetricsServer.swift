import Dispatch
import FlyingFox
import FlyingSocks
import Foundation
import Synchronization

/// Why the endpoint could not be served, in words an operator can act on.
public struct MetricsServerError: Error, CustomStringConvertible {
    public let description: String
}

/// A Prometheus scrape endpoint: `GET /metrics` answers with what `body` returns (text exposition
/// format 0.0.4), `GET /` with a pointer to it; anything else is 404. HTTP is FlyingFox's.
public final class MetricsServer: Sendable {
    let host: String
    let port: UInt16
    let body: @Sendable () -> String

    /// `host` is a literal IPv4 or IPv6 address (`localhost` means 127.0.0.1); port 0 picks a free one.
    public init(host: String, port: UInt16, body: @escaping @Sendable () -> String) {
        self.host = host == "localhost" ? "127.0.0.1" : host
        self.port = port
        self.body = body
    }

    /// Binds, calls `ready` with the address it listens on (`http://HOST:PORT/metrics`), and serves
    /// until the process is ended. Throws when the address cannot be bound (in use, not local).
    public func run(ready: @escaping @Sendable (String) -> Void) throws(MetricsServerError) {
        let server: HTTPServer
        do {
            if host.contains(":") {
                server = HTTPServer(address: try sockaddr_in6.inet6(ip6: host, port: port), logger: .disabled)
            } else {
                server = HTTPServer(address: try sockaddr_in.inet(ip4: host, port: port), logger: .disabled)
            }
        } catch {
            throw MetricsServerError(description: "\(host) is not an IPv4 or IPv6 address (a host name other than localhost is not resolved)")
        }
        let failure = Mutex<String?>(nil)
        let ended = DispatchSemaphore(value: 0)
        let body = self.body
        let (host, port) = (self.host, self.port)
        Task {
            await server.appendRoute("GET,HEAD /metrics") { _ in
                HTTPResponse(statusCode: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                             body: Data(body().utf8))
            }
            await server.appendRoute("GET /") { _ in
                HTTPResponse(statusCode: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                             body: Data("<html><head><title>virtioctl exporter</title></head><body><h1>virtioctl exporter</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n".utf8))
            }
            Task {
                do {
                    try await server.waitUntilListening(timeout: 10)
                    switch await server.listeningAddress {
                    case .ip4(let a, let p): ready("http://\(a):\(p)/metrics")
                    case .ip6(let a, let p): ready("http://[\(a)]:\(p)/metrics")
                    default: ready("http://\(host):\(port)/metrics")
                    }
                } catch {}  // run() below reports why it did not listen
            }
            do { try await server.run() } catch {
                let why: String
                if case .failed(_, let code, let message) = error as? SocketError {
                    why = code == EADDRINUSE ? "the port is in use by another process" : message
                } else {
                    why = "\(error)"
                }
                failure.withLock { $0 = "cannot listen on \(host.contains(":") ? "[\(host)]" : host):\(port): \(why)" }
            }
            ended.signal()
        }
        ended.wait()
        throw MetricsServerError(description: failure.withLock { $0 } ?? "the HTTP server stopped")
    }
}
