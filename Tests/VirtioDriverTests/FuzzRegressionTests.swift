import Foundation
import Testing

/// Every input the fuzzers ever crashed on (Fuzz/regressions) and every seed replays cleanly
/// through the plain (non-libFuzzer) build of its harness, which keeps all of the harness's traps.
@Suite(.leakChecked) struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test(arguments: ["fuzz-used-ring", "fuzz-admin-result", "fuzz-stats-region", "fuzz-vfio-user", "fuzz-vhost-user", "fuzz-net-rx"])
    func crashInputsAndSeedsReplayCleanly(target: String) throws {
        let bin = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent(target)
        let dirs = ["Fuzz/regressions/\(target)", "Fuzz/seeds/\(target)"].map { Self.root.appendingPathComponent($0).path }
            .filter { FileManager.default.fileExists(atPath: $0) }
        let inputs = dirs.reduce(0) { $0 + ((try? FileManager.default.contentsOfDirectory(atPath: $1))?.count ?? 0) }
        #expect(inputs > 0, "no seeds for \(target)")
        let p = Process()
        p.executableURL = bin
        p.arguments = dirs
        p.environment = ["SWIFT_BACKTRACE": "enable=no"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(target): \(text)")
        #expect(text.contains("\(inputs) input(s) ran"), "\(target): \(text)")
    }
}
