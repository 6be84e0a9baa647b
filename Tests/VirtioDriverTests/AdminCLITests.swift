import Foundation
import Testing

/// `virtioctl admin` against the software owner: verbs, output forms, and bad input.
@Suite(.serialized, .leakChecked) struct AdminCLITests {
    @Test func listQueryJSONListsTheSupportedOpcodes() throws {
        let (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=2", "list-query", "-o", "json"])
        #expect(rc == 0, "\(err)")
        struct R: Decodable { struct O: Decodable { let opcode: Int; let name: String }; let group: String; let opcodes: [O] }
        let r = try JSONDecoder().decode(R.self, from: Data(out.utf8))
        #expect(r.group == "sriov" && r.opcodes.map(\.opcode) == Array(0...0x11))
        #expect(r.opcodes.last?.name == "DEV_MODE_SET")
    }

    @Test func namedVerbsAndPassthruWork() throws {
        var (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=2", "caps", "-o", "json"])
        #expect(rc == 0 && out.contains("\"get_limit\" : 4"), "\(out) \(err)")
        (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=2", "legacy-read", "--member", "2", "--offset", "18"])
        #expect(rc == 0 && out.contains("= 0"), "\(out) \(err)")
        (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=2,queues=2", "dev-parts-get", "--member", "1", "-o", "json"])
        #expect(rc == 0 && out.contains("VQ_CFG") && out.contains("DRV_FEATURES"), "\(out) \(err)")
        (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=2", "mode-set", "--member", "2", "--stop"])
        #expect(rc == 0 && out.contains("member 2: stopped"), "\(out) \(err)")
        // passthru: DEV_MODE_SET by number; LIST_QUERY for self returns the le64 bitmap.
        (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=1", "passthru", "--opcode", "0x11", "--group", "sriov",
                                        "--member", "1", "--data", "01", "-o", "json"])
        #expect(rc == 0 && out.contains("\"status\" : 0"), "\(out) \(err)")
        (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=1", "passthru", "--opcode", "list-query", "--result-len", "8",
                                        "-o", "json"])
        #expect(rc == 0 && out.contains("\"result\" : \"8303000000000000\""), "bits 0,1,7,8,9: \(out)")
        // A failing status is shown and the exit is the status (EINVAL 22).
        (rc, out, err) = try virtioctl(["admin", "soft:blk,vfs=1", "passthru", "--opcode", "dev-mode-set", "--group", "sriov",
                                        "--member", "1", "--data", "02"])
        #expect(rc == 22 && out.contains("INVALID_FIELD"), "\(out) \(err)")
        (rc, out, _) = try virtioctl(["admin", "soft:blk,vfs=1", "passthru", "--opcode", "0x11", "--data", "01", "--dry-run"])
        #expect(rc == 0 && out.contains("readable 32 bytes 11000000"))
    }

    @Test(arguments: [
        (["passthru", "--opcode", "frobnicate"], "--opcode 'frobnicate'"),
        (["mode-set", "--member", "3", "--stop"], "member 3 is out of range"),
        (["legacy-write", "--member", "1", "--offset", "18", "--data", "zz"], "--data 'zz'"),
        (["passthru", "--opcode", "0x11", "--group", "sriov", "--member", "1", "--data", "0g1"], "--data '0g1'"),
        (["frob"], "unknown verb 'frob'"),
        (["mode-set", "--member", "1"], "exactly one of --stop and --resume"),
        (["list-use", "--opcodes", "list-query,bogus"], "unknown opcode 'bogus'"),
    ])
    func badInputIsRefusedClearly(args: [String], message: String) throws {
        let (rc, _, err) = try virtioctl(["admin", "soft:blk,vfs=2"] + args)
        #expect(rc != 0)
        #expect(err.contains(message), "\(err)")
    }

    @Test func noAdminQueueAndVFEnableOffAreExplained() throws {
        var (rc, _, err) = try virtioctl(["admin", "soft:blk", "list-query"])
        #expect(rc != 0 && err.contains("no admin virtqueue"), "\(err)")
        (rc, _, err) = try virtioctl(["admin", "soft:blk,vfs=2,vf_enable=off", "list-query"])
        #expect(rc != 0 && err.contains("VF Enable (SR-IOV Control bit 0) is clear"), "\(err)")
    }
}
