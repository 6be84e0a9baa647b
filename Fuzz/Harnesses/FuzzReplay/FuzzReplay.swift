#if canImport(Glibc)
import Glibc
#endif

/// The fuzz targets' plain-build entry: replays crash files (or directories of them) through a
/// target's `LLVMFuzzerTestOneInput` without libFuzzer, so saved inputs run in `swift test`.
public enum FuzzReplay {
    public static func run(_ fuzzOne: (UnsafePointer<UInt8>, Int) -> CInt) {
        var ran = 0
        for path in CommandLine.arguments.dropFirst() {
            for file in inputFiles(path) {
                let bytes = readFile(file) + [0]  // never an empty array: fuzzOne wants a real pointer
                _ = bytes.withUnsafeBufferPointer { fuzzOne($0.baseAddress!, $0.count - 1) }
                ran += 1
            }
        }
        print("\(ran) input(s) ran")
    }

    static func inputFiles(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [path] }
        defer { closedir(dir) }
        var out: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") { out.append(path + "/" + name) }
        }
        return out.sorted()
    }

    static func readFile(_ path: String) -> [UInt8] {
        guard let f = fopen(path, "rb") else { fatalError("cannot open \(path)") }
        defer { fclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return out
    }
}
