import ArgumentParser

/// The one CLI: attach, inspect and drive virtio devices.
@main
struct VirtioCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtioctl",
        abstract: "Userspace virtio driver control.",
        subcommands: [Demo.self, List.self, Bind.self, Unbind.self, Info.self, Blk.self, Net.self, Admin.self, Attach.self, Stats.self, Check.self, Soak.self, Softdev.self,
                      RingDemoCommand.self])
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case normal, json
}

enum InterruptMode: String, ExpressibleByArgument, CaseIterable {
    case poll, msix
}

enum RingLayoutChoice: String, ExpressibleByArgument, CaseIterable {
    case packed, split
}

enum OnOff: String, ExpressibleByArgument, CaseIterable {
    case on, off
    var isOn: Bool { self == .on }
}
