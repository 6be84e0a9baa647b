import ArgumentParser
import VirtioRing

extension VirtioCtl {
    /// Ring demo: the driver side against the device side in one process, moving verified data.
    struct RingDemoCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ring-demo",
            abstract: "Run the driver side of a ring against the device side and move verified data.",
            discussion: "The device offers packed, in-order, event idx and indirect; options switch each off.")

        @Option(name: [.short, .long], help: "Output format.") var output: OutputFormat = .normal
        @Option(help: "Ring layout the device offers.") var layout: RingLayoutChoice = .packed
        @Option(help: "Offer VIRTIO_F_IN_ORDER.") var inOrder: OnOff = .on
        @Option(help: "Offer VIRTIO_F_EVENT_IDX.") var eventIdx: OnOff = .on
        @Option(help: "Offer VIRTIO_F_INDIRECT_DESC.") var indirect: OnOff = .on
        @Option(help: "Queue size (split: a power of two; packed: 1...32768).") var queueSize = 256
        @Option(help: "Buffers to move.") var buffers = 100_000

        func validate() throws {
            guard (1...32768).contains(queueSize) else { throw ValidationError("--queue-size must be in 1...32768") }
            if layout == .split && queueSize & (queueSize - 1) != 0 {
                throw ValidationError("--queue-size \(queueSize) is not a power of two, which a split ring needs (use --layout packed)")
            }
            guard (1...100_000_000).contains(buffers) else { throw ValidationError("--buffers must be in 1...100000000") }
        }

        func run() throws {
            let features = RingFeatures(indirect: indirect.isOn, eventIndex: eventIdx.isOn, inOrder: inOrder.isOn)
            var names = [layout == .packed ? "RING_PACKED" : "split ring"]
            if features.inOrder { names.append("IN_ORDER") }
            if features.eventIndex { names.append("EVENT_IDX") }
            if features.indirect { names.append("INDIRECT_DESC") }
            let report = try RingDemo(packed: layout == .packed, queueSize: queueSize, features: features).run(buffers: buffers)
            if output == .json {
                try printJSON(RingDemoJSON(negotiated: names, layout: layout.rawValue, queueSize: queueSize, buffers: report.buffers,
                                           bytesWrittenByDevice: report.bytes, verified: report.verified,
                                           notificationsSent: report.notifications, notificationsSuppressed: report.suppressed,
                                           interrupts: report.interrupts))
            } else {
                print("virtioctl ring-demo: ring driver side against the ring device side, in one process")
                print("negotiated:    \(names.joined(separator: " "))")
                print("queue:         \(layout.rawValue), size \(queueSize)")
                print("moved:         \(report.buffers) buffers, \(report.bytes) bytes written by the device, "
                    + "\(report.verified) verified")
                print("notifications: \(report.notifications) sent to the device, \(report.suppressed) suppressed; "
                    + "\(report.interrupts) used-buffer notifications asked for")
            }
            guard report.verified == report.buffers else {
                throw ValidationError("data verification failed for \(report.buffers - report.verified) buffers")
            }
        }
    }
}

/// `ring-demo -o json`.
struct RingDemoJSON: Encodable {
    let negotiated: [String]
    let layout: String
    let queueSize: Int
    let buffers: Int
    let bytesWrittenByDevice: Int
    let verified: Int
    let notificationsSent: Int
    let notificationsSuppressed: Int
    let interrupts: Int
}
