import Foundation
import VirtioCore

/// Prints `value` as pretty JSON with sorted keys.
func printJSON<V: Encodable>(_ value: V) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    e.keyEncodingStrategy = .convertToSnakeCase
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

/// Writes a line to stderr (progress, notes).
func note(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// A feature bit with its name, for JSON.
struct NamedFeature: Codable {
    let bit: Int
    let name: String
}

func namedFeatures(_ set: FeatureSet, _ type: VirtioDeviceType?) -> [NamedFeature] {
    set.bits.map { NamedFeature(bit: $0, name: FeatureNames.name(of: $0, deviceType: type)) }
}

/// `64 MiB`, `4 KiB`, `512 B`.
func humanBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : (v == v.rounded() ? "\(Int(v)) \(units[u])" : String(format: "%.1f %@", v, units[u]))
}
