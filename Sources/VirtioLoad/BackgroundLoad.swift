import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioWire

/// A load option the user got wrong; the message says what is accepted.
public struct LoadError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A background block load for `attach --load`: `randread,qd=4,bs=4K`.
public struct LoadSpec: Sendable, Equatable {
    public var pattern: BenchPattern = .randread
    public var depth = 4
    public var blockSize = 4096

    public init(parsing text: String) throws(LoadError) {
        for (i, part) in text.split(separator: ",").map(String.init).enumerated() {
            if i == 0, let p = BenchPattern(rawValue: part) { pattern = p; continue }
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            switch (kv.first ?? "", kv.count == 2 ? kv[1] : "") {
            case let ("qd", v): guard let n = Int(v), (1...256).contains(n) else { throw LoadError("--load qd=\(v): 1...256") }; depth = n
            case let ("bs", v):
                guard let n = parseByteSize(v), n >= 512, n <= 1 << 20, n % 512 == 0 else { throw LoadError("--load bs=\(v): 512 bytes to 1M, a multiple of 512") }
                blockSize = Int(n)
            default:
                throw LoadError("--load '\(text)': expected PATTERN[,qd=N][,bs=SIZE] with PATTERN one of \(BenchPattern.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }
}

/// Keeps `depth` requests in flight on queue 0 (random or sequential offsets), for `attach --load`.
public final class LoadGenerator<T: VirtioTransport> {
    @usableFromInline let blk: BlockDevice<T>
    @usableFromInline let spec: LoadSpec
    @usableFromInline let buffers: DMARegion
    @usableFromInline var free: [Int]
    @usableFromInline var offsets: BlockOffsets

    public init(_ blk: BlockDevice<T>, _ spec: LoadSpec) throws {
        self.blk = blk
        self.spec = spec
        buffers = try blk.allocateBuffer(bytes: spec.depth * spec.blockSize)
        free = Array(0..<spec.depth)
        let slots = blk.capacityBytes / UInt64(spec.blockSize)
        guard slots > 0 else { throw LoadError("--load bs=\(spec.blockSize) is larger than the device") }
        offsets = BlockOffsets(pattern: spec.pattern, slots: slots, seed: 0x2545_F491_4F6C_DD1D)
    }

    /// Submits what fits, kicks, reaps; true when anything moved.
    @inlinable
    public func step() throws -> Bool {
        var moved = false
        try blk.withQueue(0) { (q: inout BlockQueue<T>) throws in
            var added = 0
            while let slot = free.last, q.slotsFree > 0 {
                let (write, index) = offsets.next()
                let sector = index * UInt64(spec.blockSize / 512)
                try q.submit(write ? .write : .read, sector: sector,
                             data: BufferElement(address: buffers.deviceAddress + UInt64(slot * spec.blockSize),
                                                 length: UInt32(spec.blockSize)), tag: UInt64(slot))
                free.removeLast()
                added += 1
            }
            if added > 0 { q.kick(); moved = true }
            while let c = try q.poll() {
                free.append(Int(c.tag))
                moved = true
            }
        }
        return moved
    }

    /// Waits for what is in flight (bounded) so the device is reset with nothing outstanding.
    @inlinable
    public func drain() throws {
        var deadline = PollDeadline(milliseconds: 2_000, stride: 1)
        while free.count < spec.depth, !deadline.expired() {
            try blk.withQueue(0) { (q: inout BlockQueue<T>) throws in
                while let c = try q.poll() { free.append(Int(c.tag)) }
            }
        }
    }
}
