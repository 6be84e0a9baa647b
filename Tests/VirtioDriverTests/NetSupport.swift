import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

typealias NetTransport = PCITransport<SoftPCIFunction<SoftNet>>

/// A soft net function from `key=value` options.
func softNet(_ spec: String = "") throws -> SoftPCIFunction<SoftNet> {
    try SoftPCIFunction.net(try SoftNetOptions(parsing: spec.split(separator: ",").map(String.init)))
}

/// Attaches the net driver to a fresh soft net function.
func attachNet(_ spec: String = "", options: NetAttachOptions = NetAttachOptions()) throws
    -> (SoftPCIFunction<SoftNet>, NetDevice<NetTransport>) {
    let f = try softNet(spec)
    return (f, try NetDevice(transport: try PCITransport(function: f), options: options))
}

/// A test frame: Ethernet to `mac`, EtherType 0x88B5 (local experimental), payload from `seed`.
func testFrame(length: Int, seed: Int, to mac: MACAddress) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: length)
    for i in 0..<6 { f[i] = mac.array[i] }
    f[6] = 0x02; f[11] = UInt8(truncatingIfNeeded: seed)
    f[12] = 0x88; f[13] = 0xB5
    var x = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
    for i in 14..<length {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        f[i] = UInt8(truncatingIfNeeded: x)
    }
    return f
}

extension NetDevice {
    /// Sends `frames` on pair `pair` (all of them, reclaiming as needed); returns how many went.
    func send(_ frames: [[UInt8]], pair: Int = 0) throws -> Int {
        var sent = 0
        while sent < frames.count {
            let n = try tx(pair).pointee.transmit(count: min(32, frames.count - sent)) { i, buffer in
                let f = frames[sent + i]
                f.withUnsafeBytes { buffer.copyMemory(from: $0) }
                return NetTxFrameInfo(length: f.count)
            }
            if n == 0 { try tx(pair).pointee.reclaim() }
            sent += n
        }
        return sent
    }

    /// Receives until `count` frames came or `rounds` polls found nothing; returns their bytes.
    func receiveFrames(_ count: Int, pair: Int = 0, rounds: Int = 2000) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        var burst = rx(pair).pointee.makeBurst(capacity: 32)
        var idle = 0
        while out.count < count, idle < rounds {
            let n = try rx(pair).pointee.receive(into: &burst)
            idle = n == 0 ? idle + 1 : 0
            for i in 0..<n {
                var bytes = [UInt8](repeating: 0, count: burst[i].length)
                _ = bytes.withUnsafeMutableBytes { burst.copy(i, to: $0) }
                out.append(bytes)
            }
        }
        return out
    }
}
