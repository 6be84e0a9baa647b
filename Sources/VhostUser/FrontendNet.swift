import VirtioCore
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// What a vhost-user net backend does not have and the frontend supplies, as QEMU and DPDK's
/// virtio-user do (vhost-user.md §7): the config space (MAC, link up, max pairs), the control
/// virtqueue (served here; the backend never sees it) and VQ_PAIRS_SET carried out as
/// SET_VRING_ENABLE per ring.
final class NetEmulation {
    /// Pairs the driver is offered (`max_virtqueue_pairs`): what the spelling asked, within the backend's.
    let pairs: Int
    let initialMAC: [UInt8]
    var mac: [UInt8]
    /// Pairs whose rings the backend has enabled (1 until VQ_PAIRS_SET).
    var activePairs = 1
    /// The control ring while the driver has it set up.
    var control: ControlRing?
    /// Why the control queue stopped being served (a chain the frontend could not read).
    var broken: String?

    init(pairs: Int, mac: [UInt8]?) {
        self.pairs = pairs
        var m = mac ?? (0..<6).map { _ in UInt8.random(in: 0...255) }
        if mac == nil { m[0] = (m[0] & 0xFC) | 0x02 }  // locally administered unicast, as virtio-user's random MAC
        initialMAC = m
        self.mac = m
    }

    /// Bits the frontend answers for, whatever the backend offers.
    static let emulated = [NetFeature.mac, NetFeature.status, NetFeature.ctrlVQ, NetFeature.ctrlRX, NetFeature.ctrlMACAddr]
    /// Bits that need a config field or a control command this frontend does not emulate.
    static let withheld = [NetFeature.mtu, NetFeature.ctrlGuestOffloads, NetFeature.ctrlVLAN, NetFeature.ctrlRXExtra,
                           NetFeature.guestAnnounce, NetFeature.rss, NetFeature.speedDuplex, 53, 57]
    /// Bits never sent to the backend in SET_FEATURES (virtio-user strips MAC, STATUS and CTRL_VQ).
    static let stripped = [NetFeature.mac, NetFeature.status, NetFeature.ctrlVQ]

    /// The driver's view: the backend's bits, less the withheld ones, with the emulated ones; MQ only with 2+ pairs.
    func offered(backend: FeatureSet) -> FeatureSet {
        var f = backend
        for b in Self.withheld { f.remove(b) }
        for b in Self.emulated { f.insert(b) }
        if pairs > 1 { f.insert(NetFeature.mq) } else { f.remove(NetFeature.mq) }
        return f
    }

    /// What SET_FEATURES carries: the driver's choice within the backend's offer, the emulated bits removed.
    func toBackend(driver: FeatureSet, backend: FeatureSet) -> FeatureSet {
        var f = driver.intersection(backend)
        for b in Self.stripped { f.remove(b) }
        return f
    }

    /// `struct virtio_net_config` through `max_virtqueue_pairs` (10 bytes): the link is always up.
    var configBytes: [UInt8] {
        var c = [UInt8](repeating: 0, count: NetConfigField.mtu)
        for i in 0..<6 { c[NetConfigField.mac + i] = mac[i] }
        c[NetConfigField.status] = UInt8(NetStatusBit.linkUp)
        c[NetConfigField.maxVirtqueuePairs] = UInt8(pairs & 0xff)
        c[NetConfigField.maxVirtqueuePairs + 1] = UInt8(pairs >> 8)
        return c
    }

    /// At device reset: QEMU's virtio_net_reset restores the configured MAC and one pair.
    func reset() {
        control = nil
        broken = nil
        mac = initialMAC
        activePairs = 1
    }
}

/// The device side of the control queue, over the frontend's own shared memory.
final class ControlRing {
    var queue: DeviceQueue<DMAArena>
    let memory: DMAArena
    let vector: UInt16?
    /// Room for the elements of one chain (header, data, ack; TABLE_SET may split its tables).
    let scratch = UnsafeMutableBufferPointer<ChainElement>.allocate(capacity: 64)

    init(queue: consuming DeviceQueue<DMAArena>, memory: DMAArena, vector: UInt16?) {
        self.queue = queue
        self.memory = memory
        self.vector = vector
    }
    deinit { scratch.deallocate() }
}

extension VhostUserFrontend {
    /// Where a control-queue kick goes: it is served on the driver's thread, inside `notify`.
    @usableFromInline static let controlQueueMarker = UInt64.max

    var controlQueueIndex: Int? { net.map { 2 * $0.pairs } }

    /// Attaches to the control ring the driver set up in the shared region.
    func setUpControlQueue(size: Int, addresses: QueueAddresses, vector: UInt16?, features: FeatureSet) throws(VirtioError) -> QueueSetup {
        guard let net else { throw .noSuchQueue(queue: queueCount, available: queueCount) }
        let arena = DMAArena(external: memory.base, size: memory.size, deviceBase: memory.deviceBase, owner: memory)
        let rf = RingFeatures(indirect: features.contains(VirtioFeature.indirectDesc),
                              eventIndex: features.contains(VirtioFeature.eventIdx), inOrder: features.contains(VirtioFeature.inOrder))
        do {
            let q = try DeviceQueue(packed: features.contains(VirtioFeature.ringPacked), queueSize: size,
                                    descriptors: addresses.descriptors, driver: addresses.driver, device: addresses.device,
                                    memory: arena, features: rf)
            net.control = ControlRing(queue: q, memory: arena, vector: vector)
        } catch {
            throw peer(.io("control queue: \(error)"))
        }
        return QueueSetup(notify: NotifyTarget(pointer: nil, location: Self.controlQueueMarker, value16: UInt16(2 * net.pairs),
                                               withData: false),
                          vector: vector)
    }

    /// Serves every command the driver queued: each gets its ack byte and a used entry of length 1.
    @usableFromInline
    func serveControlQueue() {
        guard let net, let ring = net.control, net.broken == nil else { return }
        var served = false
        while true {
            let chain: AvailableChain?
            do { chain = try ring.queue.popAvailable(into: ring.scratch) } catch {
                net.broken = "control queue: \(error)"
                return
            }
            guard let chain else { break }
            let elements = UnsafeMutableBufferPointer(rebasing: ring.scratch[0..<chain.elementCount])
            let written = controlCommand(net, elements: elements, readable: chain.readableCount, memory: ring.memory)
            ring.queue.pushUsed(id: chain.id, length: written, ringDescriptors: chain.ringDescriptors)
            served = true
        }
        if served, ring.queue.needsInterrupt(), let v = ring.vector, let fd = interruptFD(v) {
            var one: UInt64 = 1
            _ = write(fd, &one, 8)
        }
    }

    /// One command: `u8 class, u8 command, data` readable, `u8 ack` writable (net.tex "Control
    /// Virtqueue"). Returns the bytes written: 1, or 0 for a chain with no room for the ack.
    private func controlCommand(_ net: NetEmulation, elements: UnsafeMutableBufferPointer<ChainElement>, readable: Int,
                                memory: DMAArena) -> UInt32 {
        var bytes: [UInt8] = []
        for e in elements[0..<readable] {
            guard bytes.count + Int(e.length) <= 1 << 16, let p = memory.pointer(at: e.address, length: Int(e.length)) else { return 0 }
            bytes.append(contentsOf: UnsafeRawBufferPointer(start: p, count: Int(e.length)))
        }
        guard readable < elements.count, elements[readable].length >= 1,
              let ackAt = memory.pointer(at: elements[readable].address, length: 1) else { return 0 }
        var ack = NetControl.err
        if bytes.count >= 2 { ack = execute(net, bytes[0], bytes[1], Array(bytes[2...])) ? NetControl.ok : NetControl.err }
        ackAt.storeBytes(of: ack, as: UInt8.self)
        return 1
    }

    /// Carries out a command; false is VIRTIO_NET_ERR (also for a class whose feature was not negotiated).
    private func execute(_ net: NetEmulation, _ cls: UInt8, _ cmd: UInt8, _ data: [UInt8]) -> Bool {
        let f = negotiatedFeatures
        switch (cls, cmd) {
        case (NetControl.classRX, NetControl.rxPromisc), (NetControl.classRX, NetControl.rxAllMulti):
            // Accepted, as virtio-user does: the backend filters nothing (it sees every frame).
            return f.contains(NetFeature.ctrlRX) && data.count == 1 && data[0] <= 1
        case (NetControl.classMAC, NetControl.macAddrSet):
            guard f.contains(NetFeature.ctrlMACAddr), data.count == 6, data[0] & 1 == 0 else { return false }
            net.mac = data
            replaceConfig(net.configBytes)
            return true
        case (NetControl.classMAC, NetControl.macTableSet):
            // Accepted, as virtio-user does: the backend filters nothing (it sees every frame).
            return f.contains(NetFeature.ctrlRX) && NetControl.macTables(data) != nil
        case (NetControl.classMQ, NetControl.mqPairsSet):
            guard f.contains(NetFeature.mq), data.count == 2 else { return false }
            let n = Int(data[0]) | Int(data[1]) << 8
            guard n >= 1, n <= net.pairs else { return false }
            return enablePairs(n)
        default:
            return false
        }
    }

}
