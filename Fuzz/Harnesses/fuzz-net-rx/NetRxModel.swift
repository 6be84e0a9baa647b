import VirtioCore
import VirtioDrivers
import VirtioSoftDevice

/// What a correct receive path may hand out, checked against what it did. Traps (fatalError,
/// which libFuzzer records as a crash) on anything no device could make a correct driver do.
struct NetRxModel {
    let base: UnsafeMutableRawPointer
    let bufferSize: Int
    let slots: Int
    let mergeLimit: Int
    /// The sequence number the next delivered frame carries; the last one the driver handed out.
    var nextSequence: UInt64 = 1
    var lastSeen: UInt64 = 0
    var broken = false
    var seen = Set<Int>()
    static let header = 12
    /// Where a frame's magic and sequence sit in its first buffer (after the 12-byte header).
    static let stampAt = header + 14

    init<T>(queue: UnsafeMutablePointer<NetRxQueue<T>>, mergeable: Bool) {
        let area = queue.pointee.bufferArea
        base = UnsafeMutableRawPointer(mutating: area.baseAddress!)
        bufferSize = queue.pointee.bufferSize
        slots = area.count / bufferSize
        mergeLimit = queue.pointee.mergeLimit
    }

    /// An Ethernet frame of `length` bytes with magic 0xA55A and `sequence` at 14..23 when it fits.
    static func stamp(_ b: UnsafeMutableRawBufferPointer, length: Int, sequence: UInt64) {
        for i in 0..<12 { b[i] = 0x02 }
        b[12] = 0x88; b[13] = 0xB5
        // The frame buffer is reused: a short frame must not keep an older frame's stamp.
        guard length >= 24 else { for i in 14..<24 { b[i] = 0xEE }; return }
        b[14] = 0xA5; b[15] = 0x5A
        for i in 0..<8 { b[16 + i] = UInt8(truncatingIfNeeded: sequence >> (8 * UInt64(i))) }
    }

    mutating func delivered(_ result: SoftDelivery, length: Int) { nextSequence += 1 }

    mutating func threw(_ error: Error, lied: Bool) {
        if !lied { fatalError("the driver rejected an honest device: \(error)") }
        broken = true
    }

    /// Checks every frame of the burst, then scrubs the stamps from every buffer the driver took
    /// (dropped frames' too) so a stale buffer handed out again cannot pass for a fresh frame.
    mutating func received(_ burst: borrowing NetRxBurst, count: Int, lied: Bool, lent: UnsafeBufferPointer<UInt16>) {
        if broken, count > 0 { fatalError("\(count) frame(s) handed out after the queue broke") }
        seen.removeAll(keepingCapacity: true)
        for i in 0..<count {
            let f = burst[i]
            guard f.segments >= 1, f.segments <= mergeLimit else { fatalError("frame \(i): \(f.segments) segments, limit \(mergeLimit)") }
            var total = 0
            for k in 0..<f.segments {
                let s = burst.segment(k, of: i)
                total += s.count
                // Segment 0 starts after the header (12 bytes in: with 12-byte buffers, where the next slot begins).
                let inSlot = k == 0 ? Self.header : 0
                let off = s.baseAddress! - base - inSlot
                guard off >= 0, off / bufferSize < slots else { fatalError("frame \(i) segment \(k) lies outside the receive buffers") }
                let slot = off / bufferSize
                guard off % bufferSize == 0 else { fatalError("frame \(i) segment \(k) starts \(off % bufferSize + inSlot) bytes into its buffer") }
                guard inSlot + s.count <= bufferSize else {
                    fatalError("frame \(i) segment \(k): \(s.count) bytes from \(inSlot) run past the \(bufferSize)-byte buffer")
                }
                guard seen.insert(slot).inserted else { fatalError("buffer \(slot) handed out twice in one burst") }
            }
            guard total == f.length else { fatalError("frame \(i): segments hold \(total) bytes, length says \(f.length)") }
            let first = burst.segment(0, of: i)
            guard first.count >= 24, first[0] == 0x02, first[12] == 0x88, first[14] == 0xA5, first[15] == 0x5A else { continue }
            var seq: UInt64 = 0
            for b in 0..<8 { seq |= UInt64(first[16 + b]) << (8 * UInt64(b)) }
            guard seq > lastSeen, seq < nextSequence else {
                fatalError("frame \(i) carries sequence \(seq): after \(lastSeen) was handed out, next to send \(nextSequence) (a frame twice, or a stale buffer)")
            }
            lastSeen = seq
        }
        // (Buffers too small to hold a stamp never carry one: nothing to scrub.)
        for slot in lent where Self.stampAt + 2 <= bufferSize {
            base.storeBytes(of: 0, toByteOffset: Int(slot) * bufferSize + Self.stampAt, as: UInt16.self)
        }
    }
}
