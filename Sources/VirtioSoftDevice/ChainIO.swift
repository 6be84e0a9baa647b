import VirtioRing

/// Copies bytes out of a chain's device-readable part and into its device-writable part,
/// translating every element through the device's view of DMA memory.
struct ChainIO<Memory: DeviceMemory & AnyObject> {
    let elements: UnsafeMutableBufferPointer<ChainElement>
    let chain: AvailableChain
    /// Borrowed for one request: the personality's `handle` holds the memory for the call, and a
    /// ChainIO never outlives it. A strong reference (or an unowned(unsafe) one, which becomes
    /// strong at each use) was a retain and a release per request and per read or write.
    let memory: Unmanaged<Memory>

    init(elements: UnsafeMutableBufferPointer<ChainElement>, chain: AvailableChain, memory: Memory) {
        self.elements = elements
        self.chain = chain
        self.memory = .passUnretained(memory)
    }

    var readableBytes: Int {
        var n = 0
        for i in 0..<chain.readableCount { n &+= Int(elements[i].length) }
        return n
    }
    var writableBytes: Int { Int(chain.writableLength) }

    /// Walks `length` bytes from byte `offset` of one part, handing each translated piece to `body`.
    /// False when an element does not translate or the part is too short.
    private func walk(writable: Bool, offset: Int, length: Int,
                      _ body: (UnsafeMutableRawPointer, Int, Int) -> Void) -> Bool {
        let range = writable ? chain.readableCount..<chain.elementCount : 0..<chain.readableCount
        var skip = offset
        var left = length
        var done = 0
        for i in range where left > 0 {
            let e = elements[i]
            let len = Int(e.length)
            if skip >= len { skip -= len; continue }
            let n = min(len - skip, left)
            guard let p = memory._withUnsafeGuaranteedRef({ $0.pointer(at: e.address &+ UInt64(skip), length: n) }) else { return false }
            body(p, done, n)
            done += n
            left -= n
            skip = 0
        }
        return left == 0
    }

    /// Where byte `offset` of the writable part lives, or nil.
    func writablePointer(at offset: Int) -> UnsafeMutableRawPointer? {
        var found: UnsafeMutableRawPointer?
        _ = walk(writable: true, offset: offset, length: 1) { p, _, _ in found = p }
        return found
    }

    func read(at offset: Int, into dst: UnsafeMutableRawPointer, length: Int) -> Bool {
        walk(writable: false, offset: offset, length: length) { p, done, n in (dst + done).copyMemory(from: p, byteCount: n) }
    }

    /// Reads a 16-byte structure of the readable part (a request header, a discard segment) and
    /// decodes it; nil when it is not all there or not in DMA memory.
    func read16<T>(at offset: Int, _ decode: (UnsafeRawPointer) -> T) -> T? {
        var raw = (UInt64(0), UInt64(0))
        guard withUnsafeMutableBytes(of: &raw, { read(at: offset, into: $0.baseAddress!, length: 16) }) else { return nil }
        return withUnsafeBytes(of: &raw) { decode($0.baseAddress!) }
    }

    func write(at offset: Int, from src: UnsafeRawPointer, length: Int) -> Bool {
        walk(writable: true, offset: offset, length: length) { p, done, n in p.copyMemory(from: src + done, byteCount: n) }
    }

    func fill(at offset: Int, length: Int, byte: UInt8) -> Bool {
        walk(writable: true, offset: offset, length: length) { p, _, n in p.initializeMemory(as: UInt8.self, repeating: byte, count: n) }
    }
}
