/// Why a device could not attach to the rings a driver programmed.
public enum DeviceQueueSetupError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidSize(Int, packed: Bool)
    case outsideMemory(descriptors: UInt64, driver: UInt64, device: UInt64)
    case misaligned(packed: Bool)

    public var description: String {
        switch self {
        case let .invalidSize(n, packed):
            packed ? "queue size \(n) is invalid for a packed ring" : "queue size \(n) is not a power of two (split rings MUST use one)"
        case let .outsideMemory(d, r, v):
            "ring addresses desc 0x\(String(d, radix: 16)) driver 0x\(String(r, radix: 16)) device 0x\(String(v, radix: 16)) are outside DMA memory"
        case .misaligned: "ring areas are not aligned as the layout requires"
        }
    }
}

/// The device side of a virtqueue in the layout the driver negotiated: the split-or-packed
/// choice is made once, here (what the software device and a vhost-user backend run).
/// `~Copyable`: it owns the ring state; calls switch in place, with no existential.
public struct DeviceQueue<Memory: DeviceMemory>: ~Copyable {
    @usableFromInline
    enum Storage {
        case split(UnsafeMutablePointer<SplitDeviceQueue<Memory>>)
        case packed(UnsafeMutablePointer<PackedDeviceQueue<Memory>>)
    }
    @usableFromInline let storage: Storage

    /// Attaches to the rings at the three device addresses, checking the size, every area's
    /// translation through `memory` and its alignment. `resuming` continues from a saved position.
    public init(packed: Bool, queueSize: Int, descriptors: UInt64, driver: UInt64, device: UInt64, memory: Memory,
                features: RingFeatures, resuming: RingPosition? = nil) throws(DeviceQueueSetupError) {
        let areas: RingAreas
        do { areas = try RingAreas(packed: packed, queueSize: queueSize) } catch {
            throw .invalidSize(queueSize, packed: packed)
        }
        guard let d = memory.pointer(at: descriptors, length: areas.descriptorBytes),
              let dr = memory.pointer(at: driver, length: areas.driverBytes),
              let dv = memory.pointer(at: device, length: areas.deviceBytes) else {
            throw .outsideMemory(descriptors: descriptors, driver: driver, device: device)
        }
        guard areas.aligned(descriptors: descriptors, driver: driver, device: device) else { throw .misaligned(packed: packed) }
        if packed {
            let p = UnsafeMutablePointer<PackedDeviceQueue<Memory>>.allocate(capacity: 1)
            p.initialize(to: PackedDeviceQueue(layout: try! PackedLayout(queueSize: queueSize), descriptors: d,
                                               driverArea: dr, deviceArea: dv, memory: memory, features: features,
                                               resuming: resuming))
            storage = .packed(p)
        } else {
            let p = UnsafeMutablePointer<SplitDeviceQueue<Memory>>.allocate(capacity: 1)
            p.initialize(to: SplitDeviceQueue(layout: try! SplitLayout(queueSize: queueSize), descriptors: d,
                                              driverArea: dr, deviceArea: dv, memory: memory, features: features,
                                              resuming: resuming))
            storage = .split(p)
        }
    }

    deinit {
        switch storage {
        case let .split(p): p.deinitialize(count: 1); p.deallocate()
        case let .packed(p): p.deinitialize(count: 1); p.deallocate()
        }
    }

    /// Runs `split` or `packed` on the ring of that layout (for layout-specific work off the hot
    /// path, such as the software device's fault injection writing raw used entries).
    public mutating func withLayout<R>(split: (inout SplitDeviceQueue<Memory>) -> R,
                                       packed: (inout PackedDeviceQueue<Memory>) -> R) -> R {
        switch storage {
        case let .split(p): split(&p.pointee)
        case let .packed(p): packed(&p.pointee)
        }
    }
}

extension DeviceQueue: DeviceRing {
    @inlinable public var queueSize: Int {
        switch storage {
        case let .split(p): p.pointee.queueSize
        case let .packed(p): p.pointee.queueSize
        }
    }

    public var violation: RingViolation? {
        switch storage {
        case let .split(p): p.pointee.violation
        case let .packed(p): p.pointee.violation
        }
    }

    @inlinable @inline(__always)
    public mutating func popAvailable(into elements: UnsafeMutableBufferPointer<ChainElement>) throws(RingError) -> AvailableChain? {
        switch storage {
        case let .split(p): try p.pointee.popAvailable(into: elements)
        case let .packed(p): try p.pointee.popAvailable(into: elements)
        }
    }

    @inlinable @inline(__always)
    public mutating func pushUsed(id: UInt16, length: UInt32, ringDescriptors: UInt16) {
        switch storage {
        case let .split(p): p.pointee.pushUsed(id: id, length: length, ringDescriptors: ringDescriptors)
        case let .packed(p): p.pointee.pushUsed(id: id, length: length, ringDescriptors: ringDescriptors)
        }
    }

    @inlinable @inline(__always)
    public mutating func pushUsedBatch(lastID: UInt16, length: UInt32, buffers: UInt16, ringDescriptors: UInt16) {
        switch storage {
        case let .split(p): p.pointee.pushUsedBatch(lastID: lastID, length: length, buffers: buffers, ringDescriptors: ringDescriptors)
        case let .packed(p): p.pointee.pushUsedBatch(lastID: lastID, length: length, buffers: buffers, ringDescriptors: ringDescriptors)
        }
    }

    @inlinable @inline(__always)
    public mutating func pushUsedBurst(ids: UnsafePointer<UInt16>, lengths: UnsafePointer<UInt32>,
                                       ringDescriptors: UnsafePointer<UInt16>, count: Int) {
        switch storage {
        case let .split(p): p.pointee.pushUsedBurst(ids: ids, lengths: lengths, ringDescriptors: ringDescriptors, count: count)
        case let .packed(p): p.pointee.pushUsedBurst(ids: ids, lengths: lengths, ringDescriptors: ringDescriptors, count: count)
        }
    }

    @inlinable @inline(__always)
    public mutating func needsInterrupt() -> Bool {
        switch storage {
        case let .split(p): p.pointee.needsInterrupt()
        case let .packed(p): p.pointee.needsInterrupt()
        }
    }

    public mutating func disableAvailNotifications() {
        switch storage {
        case let .split(p): p.pointee.disableAvailNotifications()
        case let .packed(p): p.pointee.disableAvailNotifications()
        }
    }

    public mutating func enableAvailNotifications() -> Bool {
        switch storage {
        case let .split(p): p.pointee.enableAvailNotifications()
        case let .packed(p): p.pointee.enableAvailNotifications()
        }
    }

    public var position: RingPosition {
        switch storage {
        case let .split(p): p.pointee.position
        case let .packed(p): p.pointee.position
        }
    }
}
