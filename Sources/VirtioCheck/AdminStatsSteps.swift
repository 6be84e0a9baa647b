import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioWire
#if canImport(Glibc)
import Glibc
#endif

/// The admin handshake (VIRTIO_F_ADMIN_VQ) and the draft statistics queue, when offered.
extension DeviceChecker {
    func adminStep() -> CheckStep {
        guard offered.contains(VirtioFeature.adminVQ) else {
            return CheckStep(name: "admin", outcome: .skip, detail: "VIRTIO_F_ADMIN_VQ not offered")
        }
        var step = CheckStep(name: "admin")
        let device = VirtioDevice(transport: transport, logger: logger)
        defer { try? device.reset() }
        let channel: AdminChannel<T>
        do {
            try device.initialize(policy: FeaturePolicy(), deviceTypeBits: [])
            channel = try AdminChannel(device: device)
            try device.driverOK()
        } catch let e as AdminError {
            step.findings.append(Classify.finding(e))
            return step
        } catch let e as VirtioError {
            step.findings.append(Classify.finding(e))
            return step
        } catch {
            step.findings.append(CheckFinding(.failure, clause: Clause.adminCompletes, "\(error)"))
            return step
        }
        channel.timeoutMilliseconds = options.timeoutMilliseconds
        var groups: [AdminGroup] = [.selfGroup]
        // With VF Enable clear every SR-IOV group command fails, as the spec says: nothing to check there.
        if let s = try? (transport as? any SRIOVOwner)?.sriovState(), s.numVFs > 0, s.vfEnable { groups.append(.sriov) }
        var notes: [String] = []
        for group in groups {
            do throws(AdminError) {
                let offeredSet: AdminOpcodeSet
                do { offeredSet = try channel.listQuery(group: group) } catch {
                    // A device without this group type answers EINVAL / INVALID_GROUP: conformant, and nothing to check.
                    if case let .commandFailed(_, _, _, status, qualifier) = error, status.effective == .einval,
                       qualifier.effective == .invalidGroup {
                        notes.append("group \(group): not supported (EINVAL, INVALID_GROUP)")
                        continue
                    }
                    throw error
                }
                let required: [AdminOpcode] = [.listQuery, .listUse]
                let missing = required.filter { !offeredSet.contains($0.rawValue) }
                if !missing.isEmpty {
                    step.findings.append(CheckFinding(.must, clause: Clause.adminListOpcodes,
                        "group \(group): LIST_QUERY leaves out \(missing.map { AdminError.name($0.rawValue) }.joined(separator: ", "))"))
                    continue
                }
                let inUse = try channel.activate(group: group)
                notes.append("group \(group): \(inUse.opcodes.count) command(s) offered and put in use")
                if let f = probe(channel, group: group, inUse: inUse, notes: &notes) {
                    step.findings.append(f)
                    // A command the device kept leaves the channel refusing more.
                    if f.clause == Clause.adminCompletes { break }
                }
            } catch {
                step.findings.append(Classify.finding(error))
                return step
            }
        }
        step.detail = notes.joined(separator: "; ")
        return step
    }

    /// One harmless query past the handshake per group, with its status, qualifier and result length checked.
    private func probe(_ channel: AdminChannel<T>, group: AdminGroup, inUse: AdminOpcodeSet, notes: inout [String]) -> CheckFinding? {
        let command: AdminCommand
        var expectedResult = 0
        switch group {
        case .selfGroup where inUse.contains(AdminOpcode.capIDListQuery.rawValue):
            command = AdminRequest.capIDListQuery()
            expectedResult = 8  // struct virtio_admin_cmd_query_cap_id_result { le64 supported_caps[1]; }
        case .sriov where inUse.contains(AdminOpcode.legacyNotifyInfo.rawValue):
            command = AdminRequest.legacyNotifyInfo(member: 1)
        default:
            return nil
        }
        // Retried here, not in the channel, to count them: EAGAIN is allowed, a device that never stops saying it is not.
        let retries = channel.eagainRetries
        channel.eagainRetries = 0
        defer { channel.eagainRetries = retries }
        var eagain = 0
        while true {
            let r: AdminResponse
            do { r = try channel.send(command) } catch { return Classify.finding(error) }
            // A reserved status or qualifier differs from what it counts as; Classify names it, and an endless EAGAIN.
            let failed = AdminError.commandFailed(opcode: command.opcode, group: command.group, member: command.memberID,
                                                  status: r.status, qualifier: r.qualifier)
            if r.status != r.status.effective || r.qualifier != r.qualifier.effective { return Classify.finding(failed) }
            if r.status == .eagain {
                eagain += 1
                guard eagain < 16 else { return Classify.finding(failed) }
                usleep(UInt32(100 << min(eagain, 10)))
                continue
            }
            let name = AdminError.name(command.opcode)
            guard r.status == .ok else {
                notes.append("\(name): \(r.status), qualifier \(r.qualifier)")
                return nil
            }
            if r.result.count < expectedResult {
                return CheckFinding(.should, clause: Clause.adminResult,
                                    "\(name) returned \(r.result.count) of the \(expectedResult) result bytes")
            }
            notes.append("\(name) OK" + (eagain > 0 ? " after \(eagain) EAGAIN answer(s) (allowed; retried)" : ""))
            return nil
        }
    }

    /// The seed-000 draft statistics queue (virtio-blk feature bit 23): post buffers, let the device
    /// ask, answer, and reject buffers it returns unasked.
    func statsStep() -> CheckStep {
        guard offered.contains(BlockFeature.draftStatsVQ) else {
            return CheckStep(name: "statistics queue", outcome: .skip, detail: "the draft statistics queue (bit 23) is not offered")
        }
        var step = CheckStep(name: "statistics queue")
        do throws(BlockError) {
            let blk = try attach([], stats: true)
            try blk.startStatistics()
            let asked = askForStatistics?() ?? false
            let deadline = monotonicMilliseconds() + UInt64(options.timeoutMilliseconds)
            var answered = false
            while !answered, monotonicMilliseconds() < deadline {
                answered = try blk.pollStatistics()
                if !answered { usleep(1000) }
            }
            if answered {
                step.detail = "a statistics request \(asked ? "(prompted) " : "")was answered with \(blk.statEntries().count) statistics"
            } else {
                step.outcome = .skip
                step.detail = "the device did not ask for statistics within \(options.timeoutMilliseconds) ms"
            }
        } catch { step.findings.append(Classify.finding(error)) }
        return step
    }
}
