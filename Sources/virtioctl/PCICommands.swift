import ArgumentParser
import VirtioAttach
import VFIO

extension VirtioCtl {
    /// `virtioctl list`: the machine's virtio PCI functions.
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List virtio PCI functions: address, type, driver, IOMMU group, VFIO device cdev and name.")
        @Option(name: [.short, .long], help: "Output format: normal or json.") var output: OutputFormat = .normal
        @Option(help: ArgumentHelp("sysfs root to read.", visibility: .hidden)) var sysfs = "/sys"

        func run() throws {
            let found = try PCIDiscovery.virtioFunctions(sysfsRoot: sysfs)
            if output == .json { return try printJSON(found) }
            guard !found.isEmpty else { return print("no virtio PCI functions found") }
            let rows = found.map { d in
                [d.address, "\(hexPadded(d.vendorID)):\(hexPadded(d.deviceID))", d.type + (d.transitional ? " (transitional)" : ""),
                 d.driver ?? "-", d.iommuGroup ?? "-", d.vfioCdev ?? "-", d.name ?? "-"]
            }
            printTable(["ADDRESS", "ID", "TYPE", "DRIVER", "IOMMU-GROUP", "VFIO-CDEV", "NAME"], rows)
        }
    }

    /// `virtioctl bind DEVICE`: hand a function to vfio-pci.
    struct Bind: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bind a virtio PCI function to vfio-pci (remembering its driver for unbind).")
        @Argument(help: "PCI address, e.g. 0000:00:04.0.") var device: String
        @Flag(help: "Without an IOMMU, bind in VFIO no-IOMMU mode (no DMA isolation; the kernel is tainted).")
        var noiommu = false
        @Flag(help: "Bind even when the kernel is using the function (a mounted disk, an interface that is up).")
        var force = false
        @Option(name: [.short, .long], help: "Output format: normal or json.") var output: OutputFormat = .normal

        func run() throws {
            guard let address = DeviceSpec.pciAddress(device) else { throw CLIError("'\(device)' is not a PCI address such as 0000:00:04.0") }
            let r = try PCIBinding().bind(address, noIOMMU: noiommu, force: force)
            if output == .json { return try printJSON(r) }
            if r.alreadyBound {
                print("\(address) is already bound to vfio-pci (group \(r.iommuGroup ?? "?"))")
            } else {
                print("\(address): \(r.previousDriver ?? "no driver") -> vfio-pci, group \(r.iommuGroup ?? "?") (\(r.groupDevice ?? "?"))"
                      + (r.noIOMMU ? ", no-IOMMU mode: no DMA isolation" : ""))
            }
            if !r.blockers.isEmpty {
                note("warning: IOMMU group \(r.iommuGroup ?? "?") is not viable until these are bound to vfio-pci too: " + r.blockers.joined(separator: ", "))
            }
        }
    }

    /// `virtioctl unbind DEVICE`: give a function back to its previous driver.
    struct Unbind: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unbind a function from vfio-pci and give it back to the driver it had before bind.")
        @Argument(help: "PCI address, e.g. 0000:00:04.0.") var device: String
        @Option(name: [.short, .long], help: "Output format: normal or json.") var output: OutputFormat = .normal

        func run() throws {
            guard let address = DeviceSpec.pciAddress(device) else { throw CLIError("'\(device)' is not a PCI address such as 0000:00:04.0") }
            let r = try PCIBinding().unbind(address)
            if output == .json { return try printJSON(r) }
            print("\(address): vfio-pci -> \(r.driver ?? "no driver")")
        }
    }
}

func hexPadded(_ v: UInt16) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 4 - s.count) + s
}

/// Left-aligned columns, two spaces apart.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { i, c in i == row.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        print(cells.joined(separator: "  "))
    }
}
