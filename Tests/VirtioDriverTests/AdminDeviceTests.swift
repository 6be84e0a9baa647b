import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice
import VirtioWire

/// Admin commands with real effect on the software members: legacy access, capabilities,
/// resource objects, device parts and mode set.
@Suite(.leakChecked) struct AdminDeviceTests {
    @Test func legacyAccessReachesTheMemberRegisters() throws {
        let o = try AdminOwner("vfs=2,queue_size=128")
        let m = o.member(2)
        let features = try o.channel.legacyRead(device: false, member: 2, offset: 0, length: 4)
        #expect(LEReader(features).u32(0) == m.offeredFeatures.word(0))
        #expect(try o.channel.legacyRead(device: false, member: 2, offset: 12, length: 2) == [128, 0], "queue size")
        // Device config: capacity of the blk config, as the member reports it.
        let cap = try o.channel.legacyRead(device: true, member: 2, offset: 0, length: 8)
        #expect(LEReader(cap).u64(0) == m.personality.sectors)
        // Status write has effect: ACKNOWLEDGE, then a reset through the legacy register.
        try o.channel.legacyWrite(device: false, member: 2, offset: 18, data: [1])
        #expect(m.status == 1)
        #expect(try o.channel.legacyRead(device: false, member: 2, offset: 18, length: 1) == [1])
        try o.channel.legacyWrite(device: false, member: 2, offset: 18, data: [0])
        #expect(m.status == 0)
        // A width that is not one field, and a read-only field, fail with EINVAL/INVALID_FIELD.
        #expect(throws: AdminError.commandFailed(opcode: 3, group: 1, member: 2, status: .einval, qualifier: .invalidField)) {
            _ = try o.channel.legacyRead(device: false, member: 2, offset: 0, length: 2)
        }
        #expect(throws: AdminError.self) { try o.channel.legacyWrite(device: false, member: 2, offset: 0, data: [0, 0, 0, 0]) }
        let info = try o.channel.legacyNotifyInfo(member: 1)
        #expect(info == [LegacyNotifyEntry(flags: 2, bar: 4, offset: 0x3000)])
        #expect(o.member(1).status == 0, "member 1 untouched")
    }

    @Test func capabilitiesAndResourceObjects() throws {
        let o = try AdminOwner("vfs=1")
        #expect(try o.channel.capabilityIDs() == [AdminCapability.devParts])
        #expect(DevPartsCapability(decoding: try o.channel.deviceCap(id: 0)) == SoftAdmin.deviceLimits)
        #expect(throws: AdminError.commandFailed(opcode: 8, group: 0, member: 0, status: .enxio, qualifier: .invalidField)) {
            _ = try o.channel.deviceCap(id: 5)
        }
        let create = AdminRequest.resourceCreate(group: .sriov, member: 1, type: 0, id: 0,
                                                 specific: AdminRequest.devPartsObject(set: false))
        // Before DRIVER_CAP_SET the driver's limit is 0: no objects.
        #expect(throws: AdminError.commandFailed(opcode: 0xa, group: 1, member: 1, status: .enospc, qualifier: .noResource)) {
            _ = try o.channel.execute(create)
        }
        // More than the device allows is refused.
        #expect(throws: AdminError.self) { try o.channel.setDriverCap(id: 0, data: [9, 9]) }
        try o.channel.enableDevPartsCapability()
        _ = try o.channel.execute(create)
        #expect(throws: AdminError.commandFailed(opcode: 0xa, group: 1, member: 1, status: .eexist, qualifier: .invalidField)) {
            _ = try o.channel.execute(create)
        }
        // With an object alive the capability cannot change.
        #expect(throws: AdminError.self) { try o.channel.setDriverCap(id: 0, data: [1, 1]) }
        #expect(try o.channel.execute(AdminRequest.resourceQuery(group: .sriov, member: 1, type: 0, id: 0)) == AdminRequest.devPartsObject(set: false))
        _ = try o.channel.execute(AdminRequest.resourceModify(group: .sriov, member: 1, type: 0, id: 0,
                                                              specific: AdminRequest.devPartsObject(set: true)))
        #expect(try o.channel.execute(AdminRequest.resourceQuery(group: .sriov, member: 1, type: 0, id: 0)) == AdminRequest.devPartsObject(set: true))
        _ = try o.channel.execute(AdminRequest.resourceDestroy(group: .sriov, member: 1, type: 0, id: 0))
        #expect(throws: AdminError.commandFailed(opcode: 0xd, group: 1, member: 1, status: .enxio, qualifier: .invalidField)) {
            _ = try o.channel.execute(AdminRequest.resourceDestroy(group: .sriov, member: 1, type: 0, id: 0))
        }
        // A device reset destroys objects and forgets the handshake; the channel starts again from LIST_QUERY.
        #expect(o.admin.log.violations.isEmpty, "\(o.admin.log.violations)")
    }

    @Test func devicePartsDescribeARunningMemberAndModeSetStopsIt() throws {
        let o = try AdminOwner("vfs=1,packed=on,queues=2")
        let member = o.member(1)
        let blk = try BlockDevice(transport: try PCITransport(function: member))
        let buf = try blk.allocateBuffer(bytes: 4096)
        fill(buf, lba: 8, gen: 1)
        try blk.write(sector: 8, from: buf)
        try o.channel.enableDevPartsCapability()
        try o.channel.setMode(member: 1, stopped: true)
        #expect(member.isStopped)
        // Metadata: SIZE, COUNT and LIST agree with what GET returns.
        _ = try o.channel.execute(AdminRequest.resourceCreate(group: .sriov, member: 1, type: 0, id: 2,
                                                              specific: AdminRequest.devPartsObject(set: false)))
        let size = LEReader(try o.channel.execute(AdminRequest.devPartsMetadataGet(member: 1, object: 2, kind: .size))).u32(0)
        let count = LEReader(try o.channel.execute(AdminRequest.devPartsMetadataGet(member: 1, object: 2, kind: .count))).u32(0)
        let list = try o.channel.execute(AdminRequest.devPartsMetadataGet(member: 1, object: 2, kind: .list,
                                                                          resultCapacity: 8 + 16 * Int(count)))
        let all = try DevicePart.decode(try o.channel.execute(AdminRequest.devPartsGet(member: 1, object: 2,
                                                                                      resultCapacity: Int(size))))
        #expect(DevicePart.encode(all).count == Int(size) && all.count == Int(count))
        #expect(LEReader(list).u32(0) == count && list.count == 8 + 16 * Int(count))
        // A LIST that does not fit is ENOMEM.
        #expect(throws: AdminError.commandFailed(opcode: 0xe, group: 1, member: 1, status: .enomem, qualifier: .noResource)) {
            _ = try o.channel.execute(AdminRequest.devPartsMetadataGet(member: 1, object: 2, kind: .list, resultCapacity: 16))
        }
        let state = try MemberState(parts: all)
        #expect(state.driverFeatures == blk.negotiated.rawValue)
        #expect(state.status == 0x0F)
        #expect(state.queues.count == 2 && state.queues.allSatisfy { $0.config.enabled })
        // Queue 0 carried one write: the ring moved one step on both sides.
        let q0 = state.queues[0].state!
        #expect(RingPosition(packed: true, availState: q0.availState, usedState: q0.usedState).nextUsed > 0)
        // SELECTED: just queue 1's VQ_CFG.
        let one = try DevicePart.decode(try o.channel.execute(AdminRequest.devPartsGet(
            member: 1, object: 2, selected: [DevicePart(type: DevicePartType.vqCfg, selector: 1, value: [])], resultCapacity: 64)))
        #expect(one.count == 1 && one[0].type == DevicePartType.vqCfg && one[0].queueIndex == 1)
        // A stopped member serves nothing: a request waits until it is resumed.
        try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws in
            try q.submit(.read, sector: 8, data: BufferElement(address: buf.deviceAddress, length: 4096), tag: 77)
            q.kick()
            #expect(try q.poll() == nil)
        }
        try o.channel.setMode(member: 1, stopped: false)
        let done = try blk.withQueue(0) { (q: inout BlockQueue<SoftTransport>) throws in try q.poll() }
        #expect(done?.tag == 77 && done?.result == .ok)
        // DEV_PARTS_SET into a running member is refused (stop it first).
        _ = try o.channel.execute(AdminRequest.resourceCreate(group: .sriov, member: 1, type: 0, id: 3,
                                                              specific: AdminRequest.devPartsObject(set: true)))
        #expect(throws: AdminError.commandFailed(opcode: 0x10, group: 1, member: 1, status: .ebusy, qualifier: .invalidField)) {
            _ = try o.channel.execute(AdminRequest.devPartsSet(member: 1, object: 3, parts: DevicePart.encode(all)))
        }
        #expect(member.log.violations.isEmpty && o.admin.log.violations.isEmpty, "\(o.admin.log.violations)")
    }
}
