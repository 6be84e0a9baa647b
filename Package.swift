// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "virtio-swift",
    platforms: [.macOS(.v15)],  // Synchronization.Atomic; no effect on Linux
    products: [
        .library(name: "VirtioRing", targets: ["VirtioRing"]),
        .executable(name: "virtioctl", targets: ["virtioctl"]),
        .executable(name: "ring-bench", targets: ["ring-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", exact: "2.0.1"),
    ],
    targets: [
        // Split and packed rings, driver side and device side. Stdlib + Synchronization only.
        .target(name: "VirtioRing"),
        // Thin C helpers for what Swift cannot do (thread affinity for now).
        .target(name: "CShim"),
        // The C baseline that ring-bench races against: the same algorithms, written in C.
        .target(name: "CRingBaseline"),
        // malloc interposer: linked into ring-bench only, counts heap allocations.
        .target(name: "CMallocCount"),
        .executableTarget(
            name: "virtioctl",
            dependencies: ["VirtioRing", "CShim", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "ring-bench",
            dependencies: ["VirtioRing", "CShim", "CRingBaseline", "CMallocCount",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(
            name: "VirtioRingTests",
            dependencies: ["VirtioRing", "CShim", .product(name: "PropertyBased", package: "swift-property-based")]),
    ],
    swiftLanguageModes: [.v6]
)
