import VirtioRing

/// What the ring demo moved.
struct RingDemoReport {
    var buffers = 0
    var bytes = 0
    var verified = 0
    var notifications = 0
    var suppressed = 0
    var interrupts = 0
}

/// Driver side against device side over one DMA arena. Each buffer is a request (8 readable
/// bytes: a sequence number) and a response (writable, several elements); the device fills
/// the response with a pattern derived from the request, and the driver checks every byte.
struct RingDemo {
    let packed: Bool
    let queueSize: Int
    let features: RingFeatures
    static let responseElements = 3
    static let elementBytes = 64

    func run(buffers: Int) throws -> RingDemoReport {
        let slots = queueSize
        let ringBytes = packed ? try PackedLayout(queueSize: queueSize).totalSize : try SplitLayout(queueSize: queueSize).totalSize
        let poolBytes = IndirectPool.size(queueSize: queueSize, maxElements: 4)
        let dataBytes = slots * (8 + Self.responseElements * Self.elementBytes)
        let arena = try DMAArena(size: ringBytes + poolBytes + dataBytes + 3 * 4096)
        let ring = try arena.allocate(length: ringBytes, alignment: 4096)
        let pool = IndirectPool(area: try arena.allocate(length: poolBytes, alignment: 4096).area, maxElements: 4)
        let data = try arena.allocate(length: dataBytes, alignment: 4096)
        if packed {
            let l = try PackedLayout(queueSize: queueSize)
            var driver = PackedDriverQueue(layout: l, memory: ring.pointer, features: features, indirect: pool)
            var device = PackedDeviceQueue(layout: l, memory: ring.pointer, deviceMemory: arena, features: features)
            return try move(&driver, &device, arena: arena, data: data, buffers: buffers)
        }
        let l = try SplitLayout(queueSize: queueSize)
        var driver = SplitDriverQueue(layout: l, memory: ring.pointer, features: features, indirect: pool)
        var device = SplitDeviceQueue(layout: l, memory: ring.pointer, deviceMemory: arena, features: features)
        return try move(&driver, &device, arena: arena, data: data, buffers: buffers)
    }

    static func pattern(_ sequence: UInt64, _ offset: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: sequence &* 31 &+ UInt64(offset))
    }

    func move<D: DriverRing & ~Copyable, V: DeviceRing & ~Copyable>(
        _ driver: inout D, _ device: inout V, arena: DMAArena, data: DMARegion, buffers: Int
    ) throws -> RingDemoReport {
        var report = RingDemoReport()
        let slotBytes = 8 + Self.responseElements * Self.elementBytes
        var sequenceOfToken = [UInt64](repeating: 0, count: queueSize)
        var responseLength = [UInt32](repeating: 0, count: queueSize)
        let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: max(queueSize, 8))
        defer { scratch.deallocate() }
        var held: [AvailableChain] = []
        var sent = 0
        var nextSlot = 0
        _ = driver.enableUsedNotifications()
        while report.buffers < buffers {
            // Driver: add requests while there is room.
            while sent < buffers {
                let slot = nextSlot % queueSize
                let base = data.deviceAddress + UInt64(slot * slotBytes)
                let sequence = UInt64(sent)
                data.pointer.storeBytes(of: sequence.littleEndian, toByteOffset: slot * slotBytes, as: UInt64.self)
                let request = [BufferElement(address: base, length: 8)]
                let response = (0..<Self.responseElements).map {
                    BufferElement(address: base + 8 + UInt64($0 * Self.elementBytes), length: UInt32(Self.elementBytes))
                }
                let token: UInt16
                do { token = try driver.add(readable: request, writable: response) } catch {
                    if error == .full { break }
                    throw error
                }
                sequenceOfToken[Int(token)] = sequence
                sent += 1
                nextSlot += 1
            }
            if driver.needsNotification() { report.notifications += 1 } else { report.suppressed += 1 }
            // Device: take every request, answer it, complete in order (in-order) or newest first.
            while let chain = try device.popAvailable(into: scratch) {
                let requestElement = scratch[0]
                guard let request = arena.pointer(at: requestElement.address, length: 8) else { break }
                let sequence = UInt64(littleEndian: request.load(as: UInt64.self))
                var written = 0
                for k in chain.readableCount..<chain.elementCount {
                    let e = scratch[k]
                    guard let p = arena.pointer(at: e.address, length: Int(e.length)) else { continue }
                    for i in 0..<Int(e.length) { p.storeBytes(of: Self.pattern(sequence, written + i), toByteOffset: i, as: UInt8.self) }
                    written += Int(e.length)
                }
                // The device writes a little less than offered, to show the used length is honoured.
                let length = UInt32(written - Int(sequence % 7))
                responseLength[Int(chain.id)] = length
                held.append(chain)
            }
            let order = features.inOrder ? held : held.reversed()
            for chain in order { device.pushUsed(chain, length: responseLength[Int(chain.id)]) }
            held.removeAll(keepingCapacity: true)
            if device.needsInterrupt() { report.interrupts += 1 }
            // Driver: reap and verify every byte the device said it wrote.
            while let used = try driver.pollUsed() {
                let sequence = sequenceOfToken[Int(used.token)]
                let slot = Int(sequence % UInt64(queueSize))
                let response = data.pointer + slot * slotBytes + 8
                var ok = used.length == responseLength[Int(used.token)]
                for i in 0..<Int(used.length) where response.load(fromByteOffset: i, as: UInt8.self) != Self.pattern(sequence, i) {
                    ok = false
                    break
                }
                if ok { report.verified += 1 }
                report.buffers += 1
                report.bytes += Int(used.length)
            }
        }
        return report
    }
}
