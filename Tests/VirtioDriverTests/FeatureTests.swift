import Testing
import VirtioCore
import VirtioDrivers
import VirtioRing

@Suite(.leakChecked) struct FeatureTests {
    @Test func everyNameParsesBackToItsBit() {
        for type in [VirtioDeviceType.block, .net, .balloon] {
            for bit in 0..<64 {
                let name = FeatureNames.name(of: bit, deviceType: type)
                if name.hasPrefix("bit ") { continue }
                #expect(FeatureNames.parse(name, deviceType: type) == bit, "\(name)")
                let short = String(name.split(separator: "_F_", maxSplits: 1).last!)
                #expect(FeatureNames.parse(short.lowercased(), deviceType: type) == bit, "\(short)")
            }
        }
        #expect(FeatureNames.name(of: 34, deviceType: .block) == "VIRTIO_F_RING_PACKED")
        #expect(FeatureNames.name(of: 9, deviceType: .block) == "VIRTIO_BLK_F_FLUSH")
        #expect(FeatureNames.name(of: 1, deviceType: .balloon) == "VIRTIO_BALLOON_F_STATS_VQ")
        #expect(FeatureNames.name(of: 45, deviceType: .block) == "bit 45")
        #expect(FeatureNames.parse("bit 40", deviceType: nil) == 40)
        #expect(FeatureNames.parse("RING-PACKED", deviceType: nil) == 34)
        #expect(FeatureNames.parse("FLUSH", deviceType: .net) == nil)
        #expect(FeatureNames.parse("64", deviceType: nil) == nil)
        // Every ratified device-independent bit 28, 29, 32-41 has a name.
        for bit in [28, 29] + Array(32...41) { #expect(!FeatureNames.name(of: bit, deviceType: nil).hasPrefix("bit ")) }
    }

    @Test func negotiationNeverAcceptsWhatWasNotOfferedOrUnderstood() throws {
        var rng = UInt64(0x5EED)
        for _ in 0..<2000 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            var offered = FeatureSet(rawValue: rng)
            offered.insert(VirtioFeature.version1)
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            let off = FeatureSet(rawValue: rng & ~(1 << 32) & 0x0000_00FF_F000_0000)
            let policy = FeaturePolicy(forcedOff: off)
            let got = try policy.negotiate(offered: offered, deviceTypeBits: blockDriverFeatures, deviceType: .block)
            #expect(got.isSubset(of: offered))
            #expect(got.intersection(off).isEmpty)
            #expect(got.isSubset(of: FeaturePolicy.defaultAccepted.union(blockDriverFeatures)))
            #expect(got.intersection(VirtioFeature.legacyOnly).isEmpty)
            #expect(got.contains(VirtioFeature.version1))
        }
        #expect(throws: VirtioError.version1ForcedOff) {
            try FeaturePolicy(forcedOff: [VirtioFeature.version1]).negotiate(offered: [32], deviceTypeBits: [], deviceType: nil)
        }
        #expect(throws: VirtioError.featureRequiredAndForcedOff(["VIRTIO_F_IN_ORDER"])) {
            try FeaturePolicy(forcedOff: [35], required: [35]).negotiate(offered: [32, 35], deviceTypeBits: [], deviceType: nil)
        }
        // Bits the transport cannot carry are dropped, not failed.
        let got = try FeaturePolicy().negotiate(offered: [32, 38, 40], deviceTypeBits: [], deviceType: nil, transportCannot: [40])
        #expect(got == [32, 38])
    }

    /// VIRTIO_F_ORDER_PLATFORM is accepted exactly where the ring's barriers are device-grade
    /// (x86-64 and aarch64 here), and the policy says so; forcing it off still works.
    @Test func orderPlatformFollowsTheBarriers() throws {
        let offered: FeatureSet = [VirtioFeature.version1, VirtioFeature.orderPlatform, VirtioFeature.ringPacked]
        let got = try FeaturePolicy().negotiate(offered: offered, deviceTypeBits: [], deviceType: .block)
        #expect(got.contains(VirtioFeature.orderPlatform) == RingBarriers.deviceGrade)
        #if arch(x86_64) || arch(arm64)
        #expect(RingBarriers.deviceGrade, "the C shim has device-grade barriers on this architecture")
        #expect(RingBarriers.summary.contains("ORDER_PLATFORM accepted"))
        #else
        #expect(RingBarriers.summary.contains("not accepted"))
        #endif
        let off = try FeaturePolicy(forcedOff: [VirtioFeature.orderPlatform]).negotiate(offered: offered, deviceTypeBits: [], deviceType: .block)
        #expect(!off.contains(VirtioFeature.orderPlatform))
    }

    @Test func statusNames() {
        #expect(DeviceStatus(rawValue: 0).names == ["RESET"])
        #expect(DeviceStatus(rawValue: 0x4F).description == "ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK|DEVICE_NEEDS_RESET")
        #expect(DeviceStatus(rawValue: 0x20).names == ["unknown 0x20"])
    }
}
