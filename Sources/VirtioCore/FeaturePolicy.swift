import VirtioRing

/// Which features the driver accepts: a default set, what the device-type driver understands,
/// and the user's overrides (bits forced off, bits required).
public struct FeaturePolicy: Sendable, Equatable {
    /// Device-independent bits accepted when offered (ADMIN_VQ only where an admin queue exists).
    /// ORDER_PLATFORM (36) only where the ring's barriers are device-grade: a driver that accepts it
    /// MUST use the barriers suitable for hardware ("Driver Requirements: Memory Barriers").
    public static let defaultAccepted: FeatureSet = {
        var s: FeatureSet = [
            VirtioFeature.version1, VirtioFeature.accessPlatform, VirtioFeature.ringPacked,
            VirtioFeature.inOrder, VirtioFeature.eventIdx, VirtioFeature.indirectDesc, VirtioFeature.notificationData,
            VirtioFeature.notifConfigData, VirtioFeature.ringReset, VirtioFeature.adminVQ,
        ]
        if RingBarriers.deviceGrade { s.insert(VirtioFeature.orderPlatform) }
        return s
    }()

    /// Bits never accepted, even when offered and understood.
    public var forcedOff: FeatureSet
    /// Bits that must be negotiated; attach fails when one is not offered.
    public var required: FeatureSet

    public init(forcedOff: FeatureSet = [], required: FeatureSet = []) {
        self.forcedOff = forcedOff
        self.required = required
    }

    /// The subset to write to driver_feature.
    /// - Parameters:
    ///   - offered: what device_feature reported.
    ///   - deviceTypeBits: the device-type bits the driver for this device understands.
    ///   - transportCannot: bits the transport cannot support on this device (a register window
    ///     too short for them, a doorbell that cannot take 32-bit writes).
    public func negotiate(offered: FeatureSet, deviceTypeBits: FeatureSet, deviceType: VirtioDeviceType?,
                          transportCannot: FeatureSet = []) throws(VirtioError) -> FeatureSet {
        func names(_ s: FeatureSet) -> [String] { FeatureNames.names(s, deviceType: deviceType) }
        // VERSION_1 MUST be accepted; a device without it is legacy-only.
        guard offered.contains(VirtioFeature.version1) else { throw .legacyDevice }
        let conflict = required.intersection(forcedOff)
        guard conflict.isEmpty else { throw .featureRequiredAndForcedOff(names(conflict)) }
        if forcedOff.contains(VirtioFeature.version1) { throw .version1ForcedOff }
        var understood = Self.defaultAccepted.union(deviceTypeBits).subtracting(VirtioFeature.legacyOnly)
        understood = understood.subtracting(transportCannot)
        let unsupported = required.subtracting(understood)
        guard unsupported.isEmpty else { throw .requiredFeatureUnsupported(names(unsupported)) }
        let missing = required.subtracting(offered)
        guard missing.isEmpty else { throw .requiredFeatureNotOffered(names(missing)) }
        // Never accept a bit the device did not offer or the driver does not understand.
        return offered.intersection(understood).subtracting(forcedOff)
    }
}
