import ArgumentParser
import VirtioAttach
import VirtioCore
import VirtioDrivers
import VirtioSoftDevice
import VirtioWire

extension VirtioCtl {
    /// `virtioctl info DEVICE`: features, status, queues and decoded config.
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Attach to a device and show its offered and negotiated features, status, queues and config.")

        @OptionGroup var device: DeviceOptions

        func run() throws {
            let report = try device.withBlockDevice(InfoReport())
            if device.output == .json { try printJSON(report) } else { report.print() }
        }
    }
}

/// Everything `info` shows.
struct InfoReport: BlockDeviceUser, Codable {
    var device = ""
    var type = ""
    var status: [String] = []
    var offered: [NamedFeature] = []
    var negotiated: [NamedFeature] = []
    var queues: [QueueInfo] = []
    var config: BlockConfig?
    var serial: String?
    var transport: [String: String] = [:]

    init() {}

    func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws -> InfoReport {
        var r = InfoReport()
        let d = blk.device
        r.device = d.transport.name
        r.type = d.deviceType.map { "\($0)" } ?? "virtio device \(d.transport.deviceID)"
        r.status = try d.transport.readStatus().names
        r.offered = namedFeatures(d.offered, d.deviceType)
        r.negotiated = namedFeatures(d.negotiated, d.deviceType)
        r.queues = d.queues
        r.config = blk.config
        r.serial = try? blk.serial()
        if let t = d.transport as? TransportDescribing {
            for (k, v) in t.transportDetails { r.transport[k] = v }
        }
        return r
    }

    func print() {
        func line(_ k: String, _ v: String) { Swift.print(k.padding(toLength: 16, withPad: " ", startingAt: 0) + v) }
        line("device", "\(device) (virtio \(type))")
        line("status", status.joined(separator: " | "))
        if let serial { line("serial", serial) }
        Swift.print("offered features:")
        for f in offered { Swift.print("  \(String(f.bit).leftPad(2))  \(f.name)") }
        Swift.print("negotiated features:")
        for f in negotiated { Swift.print("  \(String(f.bit).leftPad(2))  \(f.name)") }
        Swift.print("queues:")
        for q in queues {
            var traits = [q.layout.rawValue]
            if q.inOrder { traits.append("in-order") }
            if q.eventIndex { traits.append("event-idx") }
            if q.indirect { traits.append("indirect") }
            traits.append(q.vector.map { "MSI-X vector \($0)" } ?? "polled")
            Swift.print("  \(q.index): size \(q.size) (max \(q.maxSize)), " + traits.joined(separator: ", "))
        }
        if let c = config {
            Swift.print("config:")
            line("  capacity", "\(c.capacitySectors) sectors (\(humanBytes(c.capacityBytes)))")
            line("  blk_size", "\(c.blockSize)")
            if let s = c.segMax { line("  seg_max", "\(s)") }
            if let s = c.sizeMax { line("  size_max", "\(s)") }
            line("  num_queues", "\(c.numQueues)")
            if let e = c.physicalBlockExponent {
                line("  topology", "physical_block_exp \(e), alignment_offset \(c.alignmentOffset ?? 0), "
                    + "min_io \(c.minIOSize ?? 0), opt_io \(c.optimalIOSize ?? 0)")
            }
            if let m = c.maxDiscardSectors {
                line("  discard", "max \(m) sectors, \(c.maxDiscardSegments ?? 0) segments, alignment \(c.discardSectorAlignment ?? 0)")
            }
            if let m = c.maxWriteZeroesSectors {
                line("  write_zeroes", "max \(m) sectors, \(c.maxWriteZeroesSegments ?? 0) segments, may unmap \(c.writeZeroesMayUnmap == true ? "yes" : "no")")
            }
        }
        if !transport.isEmpty {
            Swift.print("transport:")
            for (k, v) in transport.sorted(by: { $0.key < $1.key }) { line("  " + k, v) }
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
