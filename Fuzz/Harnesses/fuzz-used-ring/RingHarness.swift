import VirtioRing
import VirtioSoftDevice

/// What the driver may legally return, kept apart from the driver's own bookkeeping: a device
/// can lie about anything in its memory, but it can never make a correct driver return a buffer
/// that is not in flight, return one twice, report more bytes than the buffer could take, or
/// keep working once it said the queue is broken.
struct Model {
    /// Per token: the buffer's writable bytes while it is in flight, -1 otherwise.
    var writable: [Int64]
    var inFlight = 0
    var broken = false

    init(queueSize: Int) { writable = [Int64](repeating: -1, count: queueSize) }

    mutating func added(_ token: UInt16, writable bytes: UInt64) {
        precondition(!broken, "add succeeded on a queue that already threw .broken")
        precondition(Int(token) < writable.count, "add returned token \(token), queue size \(writable.count)")
        precondition(writable[Int(token)] < 0, "add returned token \(token), which is still in flight")
        writable[Int(token)] = Int64(bytes)
        inFlight += 1
    }

    mutating func returned(_ u: UsedBuffer) {
        precondition(!broken, "pollUsed returned token \(u.token) after the queue threw .broken")
        precondition(Int(u.token) < writable.count && writable[Int(u.token)] >= 0,
                     "pollUsed returned token \(u.token), which is not in flight (never added, or returned already)")
        precondition(Int64(u.length) <= writable[Int(u.token)],
                     "pollUsed returned length \(u.length) for token \(u.token), which has \(writable[Int(u.token)]) writable bytes")
        writable[Int(u.token)] = -1
        inFlight -= 1
    }
}

/// Runs the op stream against one driver queue and the device queue over the same memory.
/// The device side is used as a tool for writing plausible used entries; raw writes do the rest.
struct RingHarness {
    let queueSize: Int
    /// Memory the device owns (split: the used ring; packed: the descriptor ring and device event area).
    let deviceWritten: [(pointer: UnsafeMutableRawPointer, count: Int)]
    let scratch: UnsafeMutableBufferPointer<ChainElement>
    var model: Model
    /// Chains the device side popped and has not returned yet.
    var popped: [AvailableChain] = []
    /// addChain's element lists, kept across ops (capacity reused: no two arrays per op).
    var readableScratch: [BufferElement] = [], writableScratch: [BufferElement] = []
    static let hostileKinds = HostileUsed.allCases

    init(queueSize: Int, deviceWritten: [(UnsafeMutableRawPointer, Int)],
         scratch: UnsafeMutableBufferPointer<ChainElement>) {
        self.queueSize = queueSize
        self.deviceWritten = deviceWritten.map { (pointer: $0.0, count: $0.1) }
        self.scratch = scratch
        model = Model(queueSize: queueSize)
    }

    mutating func run<D: DriverRing & ~Copyable, V: HostileDeviceRing & ~Copyable>(_ driver: inout D, _ device: inout V,
                                                                            _ input: inout FuzzInput) {
        while !input.isEmpty {
            let op = input.u8()
            switch op % 12 {
            case 0, 1: addChain(&driver, &input)
            case 2: addOne(&driver, &input)
            case 3, 4: rawWrite(&input)
            case 5: pop(&device, count: Int(op >> 4) % 4 + 1)
            case 6: pushPopped(&device, &input)
            case 7: pushArbitrary(&device, &input, kind: op >> 4)
            case 8: for _ in 0..<(Int(op >> 4) % 8 + 1) { if !pollOnce(&driver) { break } }
            case 9: drain(&driver)
            case 10: driverNotifications(&driver, Int(op >> 4))
            default: deviceNotifications(&device, Int(op >> 4))
            }
            check(driver)
        }
        drain(&driver)
        check(driver)
    }

    /// What the driver's own counters must agree with, whatever the device did.
    func check<D: DriverRing & ~Copyable>(_ driver: borrowing D) {
        precondition(driver.buffersInFlight == model.inFlight,
                     "driver counts \(driver.buffersInFlight) buffers in flight, the model \(model.inFlight)")
        precondition((0...queueSize).contains(driver.freeDescriptors), "free descriptors \(driver.freeDescriptors)")
        precondition(model.inFlight != 0 || model.broken || driver.freeDescriptors == queueSize,
                     "nothing in flight but only \(driver.freeDescriptors) of \(queueSize) descriptors free")
        precondition(model.broken == (driver.violation != nil), "driver.violation disagrees with what pollUsed threw")
    }

    // MARK: driver ops

    mutating func addChain<D: DriverRing & ~Copyable>(_ driver: inout D, _ input: inout FuzzInput) {
        let shape = input.u8()
        let k = Int(shape & 7)
        let m = k + Int(shape >> 3 & 7) == 0 ? 1 : Int(shape >> 3 & 7)
        readableScratch.removeAll(keepingCapacity: true)
        writableScratch.removeAll(keepingCapacity: true)
        var writableBytes: UInt64 = 0
        for i in 0..<(k + m) {
            let raw = input.u16()
            // 14 bits scaled by 2^0/6/12/18: small lengths mostly, now and then ones near 2^32.
            let length = UInt32(raw & 0x3fff) << (UInt32(raw >> 14) * 6)
            let e = BufferElement(address: 0x2000_0000 + UInt64(i) << 16, length: length)
            if i < k { readableScratch.append(e) } else { writableScratch.append(e); writableBytes += UInt64(length) }
        }
        guard driver.freeDescriptors > 0 else { return }
        do {
            let token = try driver.add(readable: readableScratch, writable: writableScratch)
            model.added(token, writable: writableBytes)
        } catch {
            addFailed(error)
        }
    }

    mutating func addOne<D: DriverRing & ~Copyable>(_ driver: inout D, _ input: inout FuzzInput) {
        let length = input.u32() >> UInt32(input.u8() % 32)
        let deviceWritable = length & 1 != 0
        guard driver.freeDescriptors > 0 else { return }
        do {
            let token = try driver.add(BufferElement(address: 0x3000_0000, length: length), deviceWritable: deviceWritable)
            model.added(token, writable: deviceWritable ? UInt64(length) : 0)
        } catch {
            addFailed(error)
        }
    }

    func addFailed(_ error: RingError) {
        switch error {
        case .full, .invalidBuffer: break  // no room now, or a shape this queue cannot take: both fine
        case .broken: precondition(model.broken, "add threw .broken before pollUsed ever did")
        case .invalidQueueSize: fatalError("add threw \(error)")
        }
    }

    /// One pollUsed; true when it returned a buffer.
    mutating func pollOnce<D: DriverRing & ~Copyable>(_ driver: inout D) -> Bool {
        do {
            guard let used = try driver.pollUsed() else {
                precondition(!model.broken, "pollUsed returned nil after the queue threw .broken")
                return false
            }
            model.returned(used)
            return true
        } catch {
            guard case .broken = error else { fatalError("pollUsed threw \(error)") }
            model.broken = true
            return false
        }
    }

    /// Polls until nothing is left; more returns than buffers ever in flight means the loop would not end.
    mutating func drain<D: DriverRing & ~Copyable>(_ driver: inout D) {
        var returned = 0
        while pollOnce(&driver) {
            returned += 1
            precondition(returned <= queueSize, "pollUsed keeps returning buffers: \(returned) in one drain")
        }
    }

    func driverNotifications<D: DriverRing & ~Copyable>(_ driver: inout D, _ which: Int) {
        switch which % 6 {
        case 0: driver.disableUsedNotifications()
        case 1: _ = driver.enableUsedNotifications()
        case 2: _ = driver.enableUsedNotificationsDelayed()
        case 3: _ = driver.notificationData(queueIndex: UInt16(which))
        case 4: _ = driver.position
        default: _ = driver.needsNotification()
        }
    }

    // MARK: device ops

    /// 1, 2 or 4 fuzz bytes anywhere in memory the device owns.
    func rawWrite(_ input: inout FuzzInput) {
        let how = input.u8()
        let width = 1 << Int(how % 3)  // 1, 2 or 4
        let area = deviceWritten[Int(how >> 2) % deviceWritten.count]
        let offset = Int(input.u16()) % (area.count - width + 1)
        let value = input.u32()
        switch width {
        case 1: area.pointer.storeBytes(of: UInt8(truncatingIfNeeded: value), toByteOffset: offset, as: UInt8.self)
        case 2: area.pointer.storeBytes(of: UInt16(truncatingIfNeeded: value), toByteOffset: offset, as: UInt16.self)
        default: area.pointer.storeBytes(of: value, toByteOffset: offset, as: UInt32.self)
        }
    }

    mutating func pop<V: DeviceRing & ~Copyable>(_ device: inout V, count: Int) {
        for _ in 0..<count {
            guard let chain = try? device.popAvailable(into: scratch) else { return }
            popped.append(chain)
        }
    }

    /// Returns popped chains the way a device would: one, or an in-order batch, with an honest or fuzz length.
    mutating func pushPopped<V: DeviceRing & ~Copyable>(_ device: inout V, _ input: inout FuzzInput) {
        let how = input.u8()
        guard !popped.isEmpty else { return }
        let last = Int(input.u8()) % popped.count
        let honest = UInt32(clamping: popped[last].writableLength)
        let length: UInt32 = switch how >> 1 & 3 {
        case 0: honest
        case 1: honest == UInt32.max ? honest : input.u32() % (honest + 1)
        case 2: 0
        default: input.u32()
        }
        if how & 1 == 0 {
            device.pushUsed(popped[last], length: length)
            popped.remove(at: last)
        } else {
            // In-order batch: one entry for the last buffer, covering every popped one before it.
            let batch = popped[0...last]
            let descriptors = batch.reduce(0) { $0 + Int($1.ringDescriptors) }
            device.pushUsedBatch(lastID: popped[last].id, length: length, buffers: UInt16(batch.count),
                                 ringDescriptors: UInt16(truncatingIfNeeded: descriptors))
            popped.removeFirst(last + 1)
        }
    }

    /// A used entry for any id (hostile modes of the software device, or plain fuzz values).
    mutating func pushArbitrary<V: HostileDeviceRing & ~Copyable>(_ device: inout V, _ input: inout FuzzInput, kind: UInt8) {
        let id = popped.isEmpty || kind & 8 != 0 ? input.u16() % UInt16(truncatingIfNeeded: queueSize + 2) : popped[0].id
        let length = input.u32() >> UInt32(input.u8() % 32)
        let descriptors = UInt16(input.u8()) % UInt16(queueSize + 1)
        if Int(kind & 7) < Self.hostileKinds.count {
            device.pushHostile(Self.hostileKinds[Int(kind & 7)], id: id, length: length, ringDescriptors: descriptors)
        } else {
            device.pushUsed(id: id, length: length, ringDescriptors: descriptors)
        }
    }

    func deviceNotifications<V: DeviceRing & ~Copyable>(_ device: inout V, _ which: Int) {
        switch which % 3 {
        case 0: device.disableAvailNotifications()
        case 1: _ = device.enableAvailNotifications()
        default: _ = device.needsInterrupt()
        }
    }
}
