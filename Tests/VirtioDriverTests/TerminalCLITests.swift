import Foundation
import Testing

/// The live `stats --watch` view in a real terminal (tmux), `stats --log`, shell completions and
/// the man page.
@Suite(.serialized, .leakChecked) struct TerminalCLITests {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "virtioctl-tty-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    var exe: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("virtioctl").path
    }

    func attach(_ region: String) throws -> Process {
        try startAttach(["soft:blk,stats_vq=on,stats_interval=100", "--load", "randread,qd=4", "--interval-ms", "100"], region: region)
    }

    @Test func theLiveViewRedrawsOneTableInPlaceAndTakesKeys() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let region = dir + "/live.stats"
        let device = try attach(region)
        defer { endByPID(device) }
        let pane = try TmuxPane(socket: dir + "/tmux.sock", command: "\(exe) stats \(region) --watch 0.3; echo VIEW-EXIT=$?; sleep 30")
        defer { pane.end() }
        func tmux(_ args: String...) throws { try pane.tmux(args) }
        func capture() throws -> [String] { try pane.capture() }
        func readIO(_ lines: [String]) -> String? { lines.first { $0.hasPrefix("blk_read_io ") } }
        let end = Date().addingTimeInterval(20)
        var one = try capture()
        while readIO(one)?.split(separator: " ").count != 3, Date() < end { usleep(200_000); one = try capture() }
        usleep(800_000)
        let two = try capture()
        for frame in [one, two] {
            #expect(frame.filter { $0.hasPrefix("virtio-blk soft:blk") }.count == 1, "one header, redrawn in place: \(frame)")
            #expect(frame.first?.contains("live") == true && frame.first?.contains("sorted by rate") == true, "\(frame.first ?? "")")
        }
        #expect(readIO(one) != nil && readIO(one) != readIO(two), "values move between frames: \(readIO(one) ?? "-") / \(readIO(two) ?? "-")")
        // Sorted by rate, the busiest counter is above an idle one; `o` sorts by name.
        let byRate = two.dropFirst(3).map { $0.split(separator: " ").first.map(String.init) ?? "" }
        #expect(byRate.firstIndex(of: "blk_read_io")! < byRate.firstIndex(of: "blk_write_io")!)
        try tmux("send-keys", "o")
        usleep(500_000)
        let named = try capture()
        #expect(named.first?.contains("sorted by name") == true, "\(named.first ?? "")")
        let names = named.dropFirst(3).compactMap { $0.split(separator: " ").first.map(String.init) }.filter { !$0.isEmpty }
        #expect(names == names.sorted() && names.count > 10, "\(names)")
        try tmux("send-keys", "q")
        usleep(800_000)
        let after = try capture()
        #expect(after.contains("VIEW-EXIT=0"), "q ends the view with status 0 and restores the screen: \(after)")
    }

    @Test func soakPrintsProgressOnATerminal() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pane = try TmuxPane(socket: dir + "/tmux.sock", command: "\(exe) soak soft:blk --requests 60000; echo SOAK-EXIT=$?; sleep 30")
        defer { pane.end() }
        let end = Date().addingTimeInterval(120)
        var lines = try pane.capture()
        while !lines.contains(where: { $0.hasPrefix("SOAK-EXIT=") }), Date() < end { usleep(200_000); lines = try pane.capture() }
        #expect(lines.contains("SOAK-EXIT=0"), "\(lines)")
        #expect(lines.contains { $0.contains(" of 60000 requests  corrupt 0") }, "a progress line on the terminal: \(lines)")
        // Not a terminal: the report alone.
        let (rc, _, err) = try virtioctl(["soak", "soft:blk", "--requests", "20000"])
        #expect(rc == 0 && !err.contains(" of 20000 requests"), "\(err)")
    }

    @Test func logModePrintsCSVLines() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let region = dir + "/log.stats"
        let device = try attach(region)
        defer { endByPID(device) }
        let (rc, out, err) = try virtioctl(["stats", region, "--log", "--watch", "0.2", "--count", "3"])
        #expect(rc == 0, "\(err)")
        let lines = out.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        #expect(lines.count == 4 && lines[0].first == "time")
        #expect(Set(lines.map(\.count)).count == 1, "every line has the header's fields")
        let readIO = try #require(lines[0].firstIndex(of: "blk_read_io"))
        for l in lines.dropFirst() { #expect((Double(l[readIO]) ?? 0) > 0, "reads per second: \(l[readIO])") }
        let (brc, _, berr) = try virtioctl(["stats", region, "--log", "-o", "json"])
        #expect(brc != 0 && berr.contains("--log prints CSV"))
    }

    @Test func completionScriptsLoadInEachShell() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for shell in ["bash", "zsh", "fish"] {
            let (rc, script, err) = try virtioctl(["--generate-completion-script", shell])
            #expect(rc == 0 && script.contains("stats"), "\(shell): \(err)")
            try script.write(toFile: "\(dir)/virtioctl.\(shell)", atomically: true, encoding: .utf8)
        }
        // bash: the completion function offers a subcommand and an option of it.
        let (brc, bout, berr) = try runTool(["bash", "-c", """
            source \(dir)/virtioctl.bash
            COMP_WORDS=(virtioctl sta); COMP_CWORD=1; COMP_LINE="virtioctl sta"; COMP_POINT=13
            _virtioctl virtioctl sta virtioctl; printf '%s\\n' "${COMPREPLY[@]}"
            COMPREPLY=(); COMP_WORDS=(virtioctl stats --li); COMP_CWORD=2; COMP_LINE="virtioctl stats --li"; COMP_POINT=20
            _virtioctl virtioctl --li stats; printf '%s\\n' "${COMPREPLY[@]}"
            """])
        #expect(brc == 0 && bout.split(separator: "\n") == ["stats", "--listen"], "bash: \(bout) \(berr)")
        // fish: its own completer, with the help text as description.
        let (frc, fout, ferr) = try runTool(["fish", "-c", "source \(dir)/virtioctl.fish; complete -C 'virtioctl sta'; complete -C 'virtioctl stats --li'"])
        #expect(frc == 0 && fout.hasPrefix("stats\t") && fout.contains("--listen\tServe /metrics"), "fish: \(fout) \(ferr)")
        // zsh: compinit registers the function for virtioctl.
        let (zrc, zout, zerr) = try runTool(["zsh", "-c", "autoload -U compinit; compinit -u -D; source \(dir)/virtioctl.zsh; print $_comps[virtioctl]"])
        #expect(zrc == 0 && zout.trimmingCharacters(in: .whitespacesAndNewlines) == "_virtioctl", "zsh: \(zout) \(zerr)")
    }

    @Test func theManPageRendersAndIsCurrent() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("man/virtioctl.1").path
        let (rc, text, err) = try runTool(["env", "MANWIDTH=100", "man", "-l", page])
        #expect(rc == 0 && text.contains("VIRTIOCTL(1)"), "\(err)")
        // Generated from the command definitions: an option added since would be missing (tools/man-page).
        for word in ["attach", "stats", "--listen", "--log", "softdev", "admin"] {
            #expect(text.contains(word), "the man page lacks \(word): run tools/man-page")
        }
    }
}

/// A detached tmux session running one shell command in a 160x40 pane, on its own server socket.
struct TmuxPane {
    let socket: String
    let server: Int32
    init(socket: String, command: String) throws {
        self.socket = socket
        let (rc, _, err) = try runTool(["tmux", "-S", socket, "new-session", "-d", "-x", "160", "-y", "40", command])
        guard rc == 0 else { throw CLIMissing(path: "tmux new-session: \(err)") }
        let (_, pid, _) = try runTool(["tmux", "-S", socket, "display-message", "-p", "#{pid}"])
        server = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }
    func tmux(_ args: [String]) throws {
        let (rc, _, err) = try runTool(["tmux", "-S", socket] + args)
        #expect(rc == 0, "tmux \(args): \(err)")
    }
    func capture() throws -> [String] {
        try runTool(["tmux", "-S", socket, "capture-pane", "-p"]).1.split(separator: "\n").map(String.init)
    }
    /// Ends the server by its socket, then by its PID if it is still there.
    func end() {
        _ = try? runTool(["tmux", "-S", socket, "kill-server"])
        if server > 0, kill(server, 0) == 0 { kill(server, SIGKILL) }
    }
}
