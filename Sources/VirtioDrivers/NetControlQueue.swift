import VirtioCore
import VirtioRing
import VirtioWire

/// The control virtqueue (`u8 class; u8 command; data; u8 ack`), one command at a time: the ack is
/// preset to 0xFF (H14), the wait is bounded, and an ack that is neither OK nor ERR breaks the queue.
public struct NetControlQueue<T: VirtioTransport>: ~Copyable {
    public var virtqueue: Virtqueue<T>
    @usableFromInline let buffer: DMARegion
    /// Command bytes at 0..<ackOffset, the ack byte at ackOffset.
    static var ackOffset: Int { 1020 }
    public internal(set) var violation: NetViolation?
    public private(set) var commandsSent: UInt64 = 0
    public private(set) var commandsRefused: UInt64 = 0
    /// A command timed out: the device still owns its buffer, so no other may be sent.
    var outstanding = false

    init(virtqueue: consuming Virtqueue<T>, dma: any DMAAllocator) throws(NetError) {
        self.virtqueue = virtqueue
        do { buffer = try dma.allocate(length: 1024, alignment: 64) } catch { throw .virtio(.dma(error)) }
    }

    /// Sends `class`/`command` with `data` and waits for the ack; ERR throws `commandRefused(what)`.
    /// `healthCheck` runs while waiting (device status: NEEDS_RESET ends the wait at once).
    mutating func send(_ cls: UInt8, _ cmd: UInt8, _ data: [UInt8], what: String, timeoutMilliseconds: Int,
                       healthCheck: () throws(NetError) -> Void) throws(NetError) {
        if let violation { throw .violation(violation) }
        guard !outstanding else {
            throw .invalidRequest("\(what): an earlier control command timed out and the device still owns its buffer; reset the device")
        }
        guard 2 + data.count <= Self.ackOffset else { throw .invalidRequest("\(what): \(data.count) bytes of command data is too many") }
        let p = buffer.pointer
        p.storeBytes(of: cls, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: cmd, toByteOffset: 1, as: UInt8.self)
        for (i, b) in data.enumerated() { p.storeBytes(of: b, toByteOffset: 2 + i, as: UInt8.self) }
        p.storeBytes(of: 0xFF, toByteOffset: Self.ackOffset, as: UInt8.self)
        let parts = [BufferElement(address: buffer.deviceAddress, length: UInt32(2 + data.count)),
                     BufferElement(address: buffer.deviceAddress + UInt64(Self.ackOffset), length: 1)]
        let token: UInt16
        do {
            token = try parts.withUnsafeBufferPointer { (all) throws(RingError) -> UInt16 in
                try virtqueue.add(readable: UnsafeBufferPointer(rebasing: all[0..<1]).span,
                                  writable: UnsafeBufferPointer(rebasing: all[1..<2]).span)
            }
        } catch { throw .ring(virtqueue.index, error) }
        commandsSent &+= 1
        virtqueue.kick()
        var deadline = PollDeadline(milliseconds: timeoutMilliseconds, stride: 256)
        while true {
            let used: UsedBuffer?
            do { used = try virtqueue.pollUsed() } catch { throw .ring(virtqueue.index, error) }
            if let used {
                guard used.token == token else { continue }  // one command at a time: nothing else is in flight
                // H16: the used length of the control queue is not trusted; the ack byte is.
                let ack = p.load(fromByteOffset: Self.ackOffset, as: UInt8.self)
                switch ack {
                case NetControl.ok: return
                case NetControl.err:
                    commandsRefused &+= 1
                    throw .commandRefused(what)
                case 0xFF:
                    violation = .controlAckNotWritten(usedLength: used.length)
                    throw .violation(violation!)
                default:
                    violation = .controlAck(ack)
                    throw .violation(violation!)
                }
            }
            if try deadline.expired(check: healthCheck) {
                outstanding = true
                throw .timeout(milliseconds: timeoutMilliseconds, what: "\(what) on the control queue")
            }
        }
    }
}
