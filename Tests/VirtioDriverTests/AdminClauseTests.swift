import Foundation
import Testing
import VirtioCore
import VirtioPCI
import VirtioSoftDevice
import VirtioWire

/// The admin virtqueue MUST clauses of the digest (§d.4), each against the software owner device.
@Suite(.leakChecked) struct AdminClauseTests {
    /// d.4.1: admin queues only when 41 is negotiated, at admin_queue_index.., never when the
    /// common window is too short for those fields.
    @Test func d4_1_adminQueuesOnlyWhenNegotiatedAndAtTheAnnouncedIndex() throws {
        let o = try AdminOwner("vfs=2,queues=2,admin_queues=2")
        #expect(o.device.has(VirtioFeature.adminVQ))
        #expect(o.channel.queueIndices == 2..<4, "admin queues follow the 2 request queues")
        // Without the feature there is no channel, and nothing is set up.
        let plain = try softBlock("")
        let d = VirtioDevice(transport: try PCITransport(function: plain))
        try d.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
        #expect(throws: AdminError.self) { _ = try AdminChannel(device: d) }
        // A 0x38-byte common window cannot reach 0x3C/0x3E: the transport drops bit 41 before negotiation.
        var short = SoftFaults()
        short.commonLength = 0x38
        let f = try SoftPCIFunction.block(try SoftBlockOptions(parsing: ["vfs=1"]), faults: short)
        let t = try PCITransport(function: f)
        #expect(t.unsupportedFeatures.contains(VirtioFeature.adminVQ))
        #expect(throws: VirtioError.self) { _ = try t.adminQueueRange() }
        let d2 = VirtioDevice(transport: t)
        try d2.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
        #expect(!d2.has(VirtioFeature.adminVQ))
        // Forcing the bit off also means no admin queue.
        let o2 = try softBlock("vfs=1")
        let d3 = VirtioDevice(transport: try PCITransport(function: o2))
        try d3.initialize(policy: FeaturePolicy(forcedOff: [VirtioFeature.adminVQ]), deviceTypeBits: [])
        #expect(throws: AdminError.noAdminQueue("soft:blk: VIRTIO_F_ADMIN_VQ was offered but not negotiated")) {
            _ = try AdminChannel(device: d3)
        }
    }

    /// d.4.2 and d.4.3: one buffer per command, readable part first; both parts non-empty
    /// multiples of 8, even for 1-byte payloads (DEV_MODE_SET, legacy reads).
    @Test func d4_2_3_onePaddedBufferPerCommand() throws {
        let o = try AdminOwner("vfs=2")
        try o.channel.setMode(member: 1, stopped: true)
        _ = try o.channel.legacyRead(device: false, member: 1, offset: 18, length: 1)
        _ = try o.channel.legacyRead(device: true, member: 2, offset: 0, length: 8)
        try o.channel.setMode(member: 1, stopped: false)
        #expect(AdminRequest.devModeSet(member: 1, stopped: true).readable.count == 32)
        #expect(AdminRequest.capIDListQuery().writableLength == 16)
        // The legacy accesses are the exception: their lengths are the access width (admin-cmds-legacy-interface.tex).
        #expect(AdminRequest.legacyRead(device: false, member: 1, offset: 18, length: 1).writableLength == 9)
        #expect(AdminRequest.legacyWrite(device: false, member: 1, offset: 14, data: [1, 0]).readable.count == 34)
        #expect(o.admin.log.violations.isEmpty, "\(o.admin.log.violations)")
        #expect(o.received.count == 6)  // LIST_QUERY, LIST_USE, then the four
    }

    /// d.4.4: LIST_QUERY then LIST_USE first (per group); LIST_USE ⊆ LIST_QUERY; opcodes outside
    /// the used set are never sent.
    @Test func d4_4_handshakeFirstAndNothingOutsideTheUsedSet() throws {
        let o = try AdminOwner("vfs=2")
        _ = try o.channel.capabilityIDs()  // self group: the channel does its handshake first
        #expect(o.received == [0x0, 0x1, 0x7])
        let sent = o.received.count
        // Use only LEGACY_COMMON_CFG_READ for the SR-IOV group; then DEV_MODE_SET is refused locally.
        try o.channel.activate(group: .sriov, use: AdminOpcodeSet([0, 1, 3]))
        #expect(o.received.count == sent + 2)
        #expect(throws: AdminError.opcodeNotInUse(opcode: 0x11, group: 1, inUse: [0, 1, 3])) {
            try o.channel.setMode(member: 1, stopped: true)
        }
        #expect(o.received.count == sent + 2, "a refused opcode never reaches the device")
        // A LIST_USE that is not a subset of LIST_QUERY is refused before sending.
        var extra = AdminOpcodeSet([0, 1])
        extra.insert(0x30)
        #expect(throws: AdminError.self) { try o.channel.listUse(group: .sriov, extra) }
        #expect(o.received.count == sent + 2)
        // The device side agrees: a raw command outside the used set is a violation it reports.
        #expect(o.admin.log.violations.isEmpty)
    }

    /// d.4.5: a reserved status is handled as EINVAL, a reserved qualifier as INVALID_COMMAND.
    @Test func d4_5_reservedStatusAndQualifier() throws {
        let o = try AdminOwner("vfs=1,admin_fault=status")
        do {
            try o.channel.setMode(member: 1, stopped: true)
            Issue.record("a reserved status must fail the command")
        } catch let AdminError.commandFailed(op, _, _, status, qualifier) {
            #expect(op == 0x11)
            #expect(status == .reserved(99) && status.effective == .einval)
            #expect(qualifier == .reserved(0x1234) && qualifier.effective == .invalidCommand)
        }
        #expect(!o.member(1).isStopped)
    }

    /// d.4.6: results shorter than expected read as zero-filled.
    @Test func d4_6_shortResultsAreZeroFilled() throws {
        let o = try AdminOwner("vfs=1,admin_fault=short")
        // Host features are 4 bytes; the device writes the status and 2 bytes of them.
        let full = o.member(1).offeredFeatures.word(0)
        let got = try o.channel.legacyRead(device: false, member: 1, offset: 0, length: 4)
        #expect(got.count == 4)
        #expect(got[0] == UInt8(full & 0xFF) && got[1] == UInt8(full >> 8 & 0xFF))
        #expect(got[2] == 0 && got[3] == 0, "missing bytes act as zero")
        // LEGACY_NOTIFY_INFO cut short still decodes (missing entries read as the end marker).
        let entries = try o.channel.legacyNotifyInfo(member: 1)
        #expect(entries.count <= 1)
    }

    /// d.4.7: with several admin queues the driver keeps order itself (one command at a time) and
    /// uses every queue; EAGAIN is retried.
    @Test func d4_7_orderingAcrossQueuesAndEagainRetry() throws {
        let o = try AdminOwner("vfs=2,admin_queues=2")
        // Writes then reads on one member: each read sees the write before it, whatever queue each took.
        for i in 0..<20 {
            try o.channel.legacyWrite(device: false, member: 1, offset: 14, data: [UInt8(i % 2), 0])  // queue_select
            #expect(try o.channel.legacyRead(device: false, member: 1, offset: 14, length: 2) == [UInt8(i % 2), 0])
        }
        #expect(o.channel.commandsPerQueue.count == 2 && o.channel.commandsPerQueue.allSatisfy { $0 >= 20 })
        let e = try AdminOwner("vfs=1,admin_fault=eagain")
        try e.channel.setMode(member: 1, stopped: true)
        #expect(e.member(1).isStopped)
        // Each command was answered EAGAIN twice first, and retried.
        #expect(e.received.filter { $0 == 0x11 }.count == 3)
    }

    /// d.4.8: SR-IOV members are 1...NumVFs; with VF Enable clear every command fails, LIST_QUERY included.
    @Test func d4_8_sriovMembersAndVFEnable() throws {
        let o = try AdminOwner("vfs=2")
        let before = o.received.count
        #expect(throws: AdminError.self) { try o.channel.setMode(member: 3, stopped: true) }
        #expect(throws: AdminError.self) { try o.channel.setMode(member: 0, stopped: true) }
        #expect(o.received.count == before, "bad members are refused before anything is sent, handshake included")
        // VF Enable clear (NumVFs 2): refused by the driver, the device sees no command, LIST_QUERY included.
        let off = try AdminOwner("vfs=2,vf_enable=off")
        let sent = off.received.count
        #expect(refusal { _ = try off.channel.listQuery(group: .sriov) }.contains("VF Enable (SR-IOV Control bit 0) is clear"))
        #expect(throws: AdminError.self) { try off.channel.setMode(member: 1, stopped: true) }
        #expect(off.received.count == sent, "nothing reached the device")
        // The self group still works.
        #expect(try off.channel.capabilityIDs() == [AdminCapability.devParts])
    }

    /// Why `body` was refused as `AdminError.sriovNotReady` ("" when it was not).
    func refusal(_ body: () throws -> Void) -> String {
        do { try body() } catch { if case let .sriovNotReady(why)? = error as? AdminError { return why } }
        return ""
    }

    /// d.4.8: with VF Migration Capable set, SR-IOV group commands are refused before sending.
    @Test func d4_8_vfMigrationCapableRefused() throws {
        let o = try AdminOwner("vfs=2,vf_migration_capable=on")
        let sent = o.received.count
        #expect(refusal { try o.channel.setMode(member: 1, stopped: true) }.contains("VF Migration Capable (SR-IOV Capabilities bit 0) is set"))
        #expect(o.received.count == sent, "nothing reached the device")
    }

    /// d.4.9: status ↔ errno.
    @Test func d4_9_statusErrnoMapping() {
        let table: [(UInt16, AdminStatus)] = [(0, .ok), (6, .enxio), (11, .eagain), (12, .enomem), (16, .ebusy),
                                              (22, .einval), (28, .enospc)]
        for (raw, s) in table {
            #expect(AdminStatus(raw) == s && s.raw == raw)
        }
        #expect(AdminStatus(5).effective == .einval)
        for (raw, q) in [(UInt16(0), AdminQualifier.ok), (1, .invalidCommand), (2, .invalidOpcode), (3, .invalidField),
                         (4, .invalidGroup), (5, .invalidMember), (6, .noResource), (7, .tryAgain)] {
            #expect(AdminQualifier(raw) == q && q.raw == raw)
        }
        #expect(AdminQualifier(8).effective == .invalidCommand)
    }

    /// A command the device never completes times out in bounded time; the channel then refuses more.
    @Test func neverCompletedCommandTimesOut() throws {
        let o = try AdminOwner("vfs=1,admin_fault=hang", timeoutMilliseconds: 200)
        let start = Date()
        #expect(throws: AdminError.timeout(opcode: 0x11, queue: 1, milliseconds: 200)) {
            try o.channel.setMode(member: 1, stopped: true)
        }
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(throws: AdminError.self) { try o.channel.setMode(member: 1, stopped: false) }
    }
}
