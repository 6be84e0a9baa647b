import Testing
import TestSupport
import VirtioRing

/// How the test device returns buffers.
enum Completion: Sendable, CustomStringConvertible {
    case inOrder, outOfOrder, inOrderBatches
    var description: String {
        switch self {
        case .inOrder: "in order"
        case .outOfOrder: "out of order"
        case .inOrderBatches: "in-order batches"
        }
    }
}

/// Drives a ring pair with a checking device: the device compares every chain it pops
/// with what the driver added, and the driver must get every buffer back exactly once
/// with the length the device reported.
final class Traffic {
    struct Outstanding {
        var elements: [ChainElement]
        var serial: Int
        var writable: UInt32
        var expectedLength: UInt32?
    }
    let pair: any RingPair
    var rng: SplitMix
    var outstanding: [UInt16: Outstanding] = [:]
    var held: [(chain: AvailableChain, elements: [ChainElement])] = []
    var serial = 0
    var lastReapedSerial = -1
    var added = 0
    var reaped = 0
    let dataBase: UInt64
    let dataSize: Int
    let checkOrder: Bool

    init(_ pair: any RingPair, seed: UInt64, checkOrder: Bool) throws {
        self.pair = pair
        rng = SplitMix(seed: seed)
        let data = try pair.arena.allocate(length: 1 << 16, alignment: 64)
        dataBase = data.deviceAddress
        dataSize = data.length
        self.checkOrder = checkOrder
    }

    /// Adds a buffer of `readable` then `writable` elements; returns false when the ring is full.
    @discardableResult
    func add(readable: Int, writable: Int) throws -> Bool {
        var r: [BufferElement] = []
        var w: [BufferElement] = []
        for k in 0..<(readable + writable) {
            let len = UInt32(1 + rng.below(512))
            let addr = dataBase + UInt64(rng.below(dataSize - 512))
            if k < readable { r.append(BufferElement(address: addr, length: len)) } else { w.append(BufferElement(address: addr, length: len)) }
        }
        let token: UInt16
        do {
            token = (r.count + w.count == 1 && rng.chance(50))
                ? try pair.addOne(r.first ?? w[0], writable: w.count == 1)
                : try pair.add(readable: r, writable: w)
        } catch {
            // (`catch .full` crashes the 6.3.1 compiler's SILGen on this typed-throws enum.)
            if error == .full { return false }
            throw error
        }
        #expect(outstanding[token] == nil, "driver reused token \(token) while it was in flight")
        let elements = r.map { ChainElement(address: $0.address, length: $0.length, writable: false) }
            + w.map { ChainElement(address: $0.address, length: $0.length, writable: true) }
        outstanding[token] = Outstanding(elements: elements, serial: serial, writable: w.reduce(0) { $0 + $1.length })
        serial += 1
        added += 1
        return true
    }

    /// Adds random buffers of 1...maxChain elements until the ring is full or `limit` is reached.
    func fill(maxChain: Int, limit: Int = .max) throws {
        var n = 0
        while n < limit {
            let total = 1 + rng.below(maxChain)
            let readable = rng.below(total + 1)
            guard try add(readable: readable, writable: total - readable) else { break }
            n += 1
        }
    }

    /// The device pops everything available and checks each chain against what the driver added.
    func devicePopAll() throws {
        while let popped = try pair.pop() {
            guard let o = outstanding[popped.chain.id] else {
                Issue.record("device popped id \(popped.chain.id) that the driver never added")
                return
            }
            #expect(popped.elements == o.elements, "chain \(popped.chain.id) differs from what the driver added")
            #expect(popped.chain.readableCount == o.elements.filter { !$0.writable }.count)
            held.append(popped)
        }
    }

    /// The device returns up to `count` held buffers.
    func deviceComplete(_ mode: Completion, count: Int = .max) {
        var n = 0
        while !held.isEmpty && n < count {
            switch mode {
            case .inOrder, .outOfOrder:
                let index = mode == .inOrder ? 0 : rng.below(held.count)
                let (chain, _) = held.remove(at: index)
                let length = UInt32(clamping: chain.writableLength == 0 ? 0 : UInt64(rng.below(Int(chain.writableLength) + 1)))
                outstanding[chain.id]?.expectedLength = length
                pair.pushUsed(id: chain.id, length: length, ringDescriptors: chain.ringDescriptors)
                n += 1
            case .inOrderBatches:
                let k = min(held.count, 1 + rng.below(5))
                let batch = held.prefix(k)
                held.removeFirst(k)
                let last = batch.last!.chain
                let length = UInt32(clamping: last.writableLength == 0 ? 0 : UInt64(rng.below(Int(last.writableLength) + 1)))
                for item in batch.dropLast() {
                    let full = outstanding[item.chain.id]?.writable
                    outstanding[item.chain.id]?.expectedLength = full
                }
                outstanding[last.id]?.expectedLength = length
                let descriptors = batch.reduce(0) { $0 + Int($1.chain.ringDescriptors) }
                pair.pushBatch(lastID: last.id, length: length, buffers: UInt16(k), ringDescriptors: UInt16(descriptors))
                n += k
            }
        }
    }

    /// The driver reaps every used buffer; each must be outstanding, completed, with the right length.
    func driverReapAll() throws {
        while let used = try pair.poll() {
            guard let o = outstanding.removeValue(forKey: used.token) else {
                Issue.record("driver returned token \(used.token) that was not in flight")
                continue
            }
            #expect(o.expectedLength != nil, "driver returned token \(used.token) before the device completed it")
            #expect(used.length == o.expectedLength, "token \(used.token): length \(used.length), device said \(o.expectedLength.map(String.init) ?? "nothing")")
            if checkOrder {
                #expect(o.serial > lastReapedSerial, "in-order: token \(used.token) came back out of order")
            }
            lastReapedSerial = o.serial
            reaped += 1
        }
    }

    /// One round: fill, pop, complete, reap.
    func round(maxChain: Int, mode: Completion) throws {
        try fill(maxChain: maxChain)
        try devicePopAll()
        deviceComplete(mode)
        try driverReapAll()
    }

    func expectDrained() {
        #expect(outstanding.isEmpty, "\(outstanding.count) buffers never came back")
        #expect(pair.inFlight == 0)
        #expect(pair.freeDescriptors == pair.queueSize)
        #expect(pair.driverViolation == nil)
        #expect(pair.deviceViolation == nil)
    }
}
