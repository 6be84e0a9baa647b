// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "virtio-swift",
    platforms: [.macOS(.v15)],  // Synchronization.Atomic; no effect on Linux
    products: [
        .library(name: "VirtioRing", targets: ["VirtioRing"]),
        .library(name: "VirtioWire", targets: ["VirtioWire"]),
        .library(name: "VirtioCore", targets: ["VirtioCore"]),
        .library(name: "VirtioPCI", targets: ["VirtioPCI"]),
        .library(name: "VirtioDrivers", targets: ["VirtioDrivers"]),
        .library(name: "VirtioSoftDevice", targets: ["VirtioSoftDevice"]),
        .executable(name: "virtioctl", targets: ["virtioctl"]),
        .executable(name: "ring-bench", targets: ["ring-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", exact: "1.8.1"),
        .package(url: "https://github.com/x-sheep/swift-property-based", exact: "2.0.1"),
        // The `/metrics` endpoint's HTTP server: 13 s to a first debug build here, against 42 s for
        // swift-nio's HTTP1 and 85 s for Hummingbird (each measured alone in an empty package).
        .package(url: "https://github.com/swhitty/FlyingFox", exact: "0.27.1"),
    ],
    targets: [
        // Split and packed rings, driver side and device side. Stdlib + Synchronization only.
        .target(name: "VirtioRing", dependencies: ["CShim"]),
        // Every byte layout two sides read and write, defined once: PCI registers, blk config and
        // requests, the admin command wire, statistics entries, the little-endian codec. Stdlib only.
        .target(name: "VirtioWire"),
        // Thin C helpers for what Swift cannot do (affinity, volatile MMIO, eventfd).
        .target(name: "CShim"),
        // Feature bits and policy, status machine, VirtioTransport, initialisation, virtqueue handles.
        .target(name: "VirtioCore",
                dependencies: ["VirtioRing", "VirtioWire", .product(name: "Logging", package: "swift-log")]),
        // Host plumbing the transports share: UNIX sockets with descriptors and deadlines, eventfd sets.
        .target(name: "HostIO", dependencies: ["CShim", "VirtioCore", .product(name: "SystemPackage", package: "swift-system")]),
        // The modern virtio PCI transport over the PCIFunction seam.
        .target(name: "VirtioPCI",
                dependencies: ["HostIO", "VirtioCore", "VirtioRing", "VirtioWire", "CShim", .product(name: "Logging", package: "swift-log"),
                               .product(name: "SystemPackage", package: "swift-system")]),
        // Linux VFIO: container/group, regions, DMA mapping, MSI-X eventfds; discovery and binding.
        .target(name: "VFIO", dependencies: ["VirtioPCI", "VirtioCore", "VirtioRing", "VirtioWire", "CShim", "CLibPCI",
                                            .product(name: "SystemPackage", package: "swift-system")]),
        // vfio-user (QEMU docs/interop/vfio-user.rst): client (a PCIFunction) and server, fds over a UNIX socket.
        .target(name: "VFIOUser", dependencies: ["HostIO", "VirtioPCI", "VirtioCore", "VirtioRing", "VirtioWire", "CShim",
                                                .product(name: "SystemPackage", package: "swift-system")]),
        // vhost-user (QEMU docs/interop/vhost-user.rst): frontend (a VirtioTransport) and backend (hosts a software device).
        .target(name: "VhostUser", dependencies: ["HostIO", "VirtioCore", "VirtioRing", "VirtioWire", "CShim",
                                                 .product(name: "Logging", package: "swift-log"),
                                                 .product(name: "SystemPackage", package: "swift-system")]),
        // libpci (pciutils) for discovery with pci.ids names; Debian package libpci-dev.
        .systemLibrary(name: "CLibPCI", pkgConfig: "libpci", providers: [.apt(["libpci-dev"])]),
        // libpcap for capture files tcpdump and Wireshark read (`net fwd --pcap`); Debian package libpcap-dev.
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
        // Device drivers over VirtioCore: block.
        .target(name: "VirtioDrivers", dependencies: ["VirtioCore", "VirtioRing", "VirtioWire"]),
        // `virtioctl check`: a scripted conformance suite that names each device-side violation's clause.
        .target(name: "VirtioCheck", dependencies: ["VirtioCore", "VirtioRing", "VirtioWire", "VirtioDrivers", "VirtioLoad"]),
        // In-process software virtio PCI functions (blk personality) for tests and demos.
        .target(name: "VirtioSoftDevice",
                dependencies: ["VirtioRing", "VirtioWire", "VirtioCore", "VirtioPCI", "CShim",
                               .product(name: "SystemPackage", package: "swift-system")]),
        // Device opening: every device spelling and the common options, turned into an opened transport and driver.
        .target(name: "VirtioAttach",
                dependencies: ["VirtioCore", "VirtioPCI", "VirtioDrivers", "VirtioSoftDevice", "VFIO", "VFIOUser", "VhostUser", "VirtioWire",
                               .product(name: "Logging", package: "swift-log")]),
        // Block load generation: the benchmark workers, attach's background load, one offset stream and clock.
        .target(name: "VirtioLoad", dependencies: ["VirtioCore", "VirtioDrivers", "VirtioRing", "VirtioWire", "CMallocCount", "CPcap",
                                                  .product(name: "Logging", package: "swift-log")]),
        // `virtioctl stats --listen`: serves a Prometheus exposition over HTTP (FlyingFox kept out of the rest).
        .target(name: "VirtioExporter", dependencies: [.product(name: "FlyingFox", package: "FlyingFox")]),
        // The C baseline that ring-bench races against: the same algorithms, written in C.
        .target(name: "CRingBaseline"),
        // malloc interposer: counts heap allocations (process-wide and per thread).
        .target(name: "CMallocCount"),
        .executableTarget(
            name: "virtioctl",
            dependencies: ["VirtioRing", "VirtioWire", "VirtioCore", "VirtioPCI", "VirtioDrivers", "VirtioSoftDevice", "VFIO", "VFIOUser",
                           "VirtioAttach", "VirtioLoad", "VirtioCheck", "VirtioExporter", "CShim", "CMallocCount",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "ring-bench",
            dependencies: ["VirtioRing", "CShim", "CRingBaseline", "CMallocCount",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Helpers shared by the test targets (deterministic random numbers).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(
            name: "VirtioRingTests",
            dependencies: ["VirtioRing", "VirtioCore", "CShim", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(name: "VirtioWireTests", dependencies: ["VirtioWire"]),
        .testTarget(
            name: "VirtioDriverTests",
            dependencies: ["VirtioRing", "VirtioWire", "VirtioCore", "VirtioPCI", "VirtioDrivers", "VirtioSoftDevice", "VFIO", "VFIOUser",
                           "VirtioAttach", "VirtioCheck", "VirtioLoad", "CShim", "CMallocCount", "TestSupport"]),
        // libFuzzer harnesses for bytes a device or peer writes (tools/fuzz; -DFUZZING drops their replay
        // @main, which FuzzReplay provides in plain builds so saved inputs replay in swift test).
        .target(name: "FuzzReplay", path: "Fuzz/Harnesses/FuzzReplay"),
        .executableTarget(name: "fuzz-used-ring", dependencies: ["VirtioRing", "VirtioSoftDevice", "FuzzReplay"], path: "Fuzz/Harnesses/fuzz-used-ring"),
        .executableTarget(name: "fuzz-admin-result", dependencies: ["VirtioCore", "VirtioRing", "VirtioWire", "FuzzReplay"], path: "Fuzz/Harnesses/fuzz-admin-result"),
        .executableTarget(name: "fuzz-stats-region", dependencies: ["VirtioCore", "VirtioWire", "FuzzReplay"], path: "Fuzz/Harnesses/fuzz-stats-region"),
        .executableTarget(name: "fuzz-vhost-user", dependencies: ["VhostUser", "VirtioCore", "VirtioSoftDevice", "VirtioWire", "CShim", "FuzzReplay"], path: "Fuzz/Harnesses/fuzz-vhost-user"),
        .executableTarget(name: "fuzz-net-rx", dependencies: ["VirtioCore", "VirtioDrivers", "VirtioPCI", "VirtioSoftDevice", "FuzzReplay"], path: "Fuzz/Harnesses/fuzz-net-rx"),
        .executableTarget(name: "fuzz-vfio-user", dependencies: ["VFIOUser", "VirtioPCI", "VirtioRing", "VirtioWire", "CShim", "FuzzReplay"], path: "Fuzz/Harnesses/fuzz-vfio-user"),
    ],
    swiftLanguageModes: [.v6]
)
