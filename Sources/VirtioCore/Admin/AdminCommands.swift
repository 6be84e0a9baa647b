import VirtioRing
import VirtioWire

extension AdminChannel {
    /// Reads `length` bytes of a member's legacy common (`device: false`) or device config.
    public func legacyRead(device: Bool, member: UInt64, offset: UInt8, length: Int) throws(AdminError) -> [UInt8] {
        let r = try execute(AdminRequest.legacyRead(device: device, member: member, offset: offset, length: length))
        return LEReader(r).slice(0, length)
    }

    public func legacyWrite(device: Bool, member: UInt64, offset: UInt8, data: [UInt8]) throws(AdminError) {
        _ = try execute(AdminRequest.legacyWrite(device: device, member: member, offset: offset, data: data))
    }

    public func legacyNotifyInfo(member: UInt64) throws(AdminError) -> [LegacyNotifyEntry] {
        LegacyNotifyEntry.decode(try execute(AdminRequest.legacyNotifyInfo(member: member)))
    }

    public func capabilityIDs() throws(AdminError) -> [UInt16] { bitmapMembers(try execute(AdminRequest.capIDListQuery())) }

    public func deviceCap(id: UInt16) throws(AdminError) -> [UInt8] { try execute(AdminRequest.deviceCapGet(id: id)) }

    public func setDriverCap(id: UInt16, data: [UInt8]) throws(AdminError) {
        _ = try execute(AdminRequest.driverCapSet(id: id, data: data))
    }

    /// The DEV_PARTS capability as Linux sets it up: CAP_ID_LIST_QUERY, DEVICE_CAP_GET, then
    /// DRIVER_CAP_SET with the device's limits (objects cannot be created before it).
    @discardableResult
    public func enableDevPartsCapability() throws(AdminError) -> DevPartsCapability {
        guard try capabilityIDs().contains(AdminCapability.devParts) else {
            throw .noAdminQueue("\(device.transport.name) does not offer the device-parts capability (CAP_ID_LIST_QUERY)")
        }
        let cap = DevPartsCapability(decoding: try deviceCap(id: AdminCapability.devParts))
        try setDriverCap(id: AdminCapability.devParts, data: cap.encoded)
        return cap
    }

    /// Stops (`stopped: true`) or resumes a member.
    public func setMode(member: UInt64, stopped: Bool) throws(AdminError) {
        _ = try execute(AdminRequest.devModeSet(member: member, stopped: stopped))
    }

    /// Everything a member's parts say, the way Linux's virtio-vfio-pci saves it: create a GET object,
    /// ask its size, get ALL parts, destroy the object. `object` is the id to use.
    public func saveParts(member: UInt64, object: UInt32 = 0) throws(AdminError) -> [DevicePart] {
        let create = AdminRequest.resourceCreate(group: .sriov, member: member, type: ResourceObjectType.devParts,
                                                 id: object, specific: AdminRequest.devPartsObject(set: false))
        _ = try execute(create)
        do throws(AdminError) {
            let meta = try execute(AdminRequest.devPartsMetadataGet(member: member, object: object, kind: .size))
            let size = Int(LEReader(meta).u32(0))
            guard size > 0 else { throw AdminError.invalidRequest("DEV_PARTS_METADATA_GET says the parts are 0 bytes") }
            guard size + AdminCommand.statusSize <= Self.maxWritable else {
                throw AdminError.tooLarge(what: "device parts", bytes: size, limit: Self.maxWritable - AdminCommand.statusSize)
            }
            let bytes = try execute(AdminRequest.devPartsGet(member: member, object: object, resultCapacity: size))
            let parts: [DevicePart]
            do { parts = try DevicePart.decode(bytes) } catch { throw AdminError.malformedResult(error) }
            _ = try execute(AdminRequest.resourceDestroy(group: .sriov, member: member, type: ResourceObjectType.devParts,
                                                         id: object))
            return parts
        } catch {
            _ = try? execute(AdminRequest.resourceDestroy(group: .sriov, member: member, type: ResourceObjectType.devParts,
                                                          id: object))
            throw error
        }
    }

    /// Writes parts into a (stopped) member through a SET object, then destroys the object.
    public func restoreParts(member: UInt64, parts: [DevicePart], object: UInt32 = 1) throws(AdminError) {
        _ = try execute(AdminRequest.resourceCreate(group: .sriov, member: member, type: ResourceObjectType.devParts,
                                                    id: object, specific: AdminRequest.devPartsObject(set: true)))
        defer {
            _ = try? execute(AdminRequest.resourceDestroy(group: .sriov, member: member, type: ResourceObjectType.devParts,
                                                          id: object))
        }
        _ = try execute(AdminRequest.devPartsSet(member: member, object: object, parts: DevicePart.encode(parts)))
    }
}
