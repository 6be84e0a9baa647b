// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "virtio-swift",
    platforms: [.macOS(.v15)],  // Synchronization.Atomic; no effect on Linux
    products: [
        .library(name: "VirtioRing", targets: ["VirtioRing"]),
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
    ],
    targets: [
        // Split and packed rings, driver side and device side. Stdlib + Synchronization only.
        .target(name: "VirtioRing", dependencies: ["CShim"]),
        // Thin C helpers for what Swift cannot do (affinity, volatile MMIO, eventfd).
        .target(name: "CShim"),
        // Feature bits and policy, status machine, VirtioTransport, initialisation, virtqueue handles.
        .target(name: "VirtioCore",
                dependencies: ["VirtioRing", .product(name: "Logging", package: "swift-log")]),
        // The modern virtio PCI transport over the PCIFunction seam.
        .target(name: "VirtioPCI",
                dependencies: ["VirtioCore", "VirtioRing", "CShim", .product(name: "Logging", package: "swift-log")]),
        // Linux VFIO: container/group, regions, DMA mapping, MSI-X eventfds; discovery and binding.
        .target(name: "VFIO", dependencies: ["VirtioPCI", "VirtioCore", "VirtioRing", "CShim", "CLibPCI"]),
        // vfio-user (QEMU docs/interop/vfio-user.rst): client (a PCIFunction) and server, fds over a UNIX socket.
        .target(name: "VFIOUser", dependencies: ["VirtioPCI", "VirtioCore", "VirtioRing", "CShim"]),
        // libpci (pciutils) for discovery with pci.ids names; Debian package libpci-dev.
        .systemLibrary(name: "CLibPCI", pkgConfig: "libpci", providers: [.apt(["libpci-dev"])]),
        // Device drivers over VirtioCore: block.
        .target(name: "VirtioDrivers", dependencies: ["VirtioCore", "VirtioRing"]),
        // `virtioctl check`: a scripted conformance suite that names each device-side violation's clause.
        .target(name: "VirtioCheck", dependencies: ["VirtioCore", "VirtioRing", "VirtioDrivers"]),
        // In-process software virtio PCI functions (blk personality) for tests and demos.
        .target(name: "VirtioSoftDevice",
                dependencies: ["VirtioRing", "VirtioCore", "VirtioPCI", "VFIOUser", "CShim",
                               .product(name: "SystemPackage", package: "swift-system")]),
        // The C baseline that ring-bench races against: the same algorithms, written in C.
        .target(name: "CRingBaseline"),
        // malloc interposer: counts heap allocations (process-wide and per thread).
        .target(name: "CMallocCount"),
        .executableTarget(
            name: "virtioctl",
            dependencies: ["VirtioRing", "VirtioCore", "VirtioPCI", "VirtioDrivers", "VirtioSoftDevice", "VFIO", "VFIOUser",
                           "VirtioCheck", "CShim", "CMallocCount",
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
            dependencies: ["VirtioRing", "CShim", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(
            name: "VirtioDriverTests",
            dependencies: ["VirtioRing", "VirtioCore", "VirtioPCI", "VirtioDrivers", "VirtioSoftDevice", "VFIO", "VFIOUser",
                           "VirtioCheck", "CShim", "CMallocCount", "TestSupport"]),
        // libFuzzer harnesses for bytes a device or peer writes (tools/fuzz; -DFUZZING drops their replay
        // @main, which FuzzReplay provides in plain builds so saved inputs replay in swift test).
        .target(name: "FuzzReplay"),
        .executableTarget(name: "fuzz-used-ring", dependencies: ["VirtioRing", "FuzzReplay"]),
        .executableTarget(name: "fuzz-admin-result", dependencies: ["VirtioCore", "VirtioRing", "FuzzReplay"]),
        .executableTarget(name: "fuzz-stats-region", dependencies: ["VirtioCore", "FuzzReplay"]),
        .executableTarget(name: "fuzz-vfio-user", dependencies: ["VFIOUser", "VirtioPCI", "VirtioRing", "CShim", "FuzzReplay"]),
    ],
    swiftLanguageModes: [.v6]
)
