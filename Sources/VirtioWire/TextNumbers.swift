/// `0x1f`, `31`: what a person types for a number.
public func parseNumber(_ text: String) -> UInt64? {
    let t = text.lowercased()
    if t.hasPrefix("0x") { return UInt64(t.dropFirst(2), radix: 16) }
    return UInt64(t)
}

/// `64M`, `1G`, `4096`, `512K` (binary multiples) to bytes.
public func parseByteSize(_ text: String) -> UInt64? {
    var digits = text.uppercased()
    var scale: UInt64 = 1
    if digits.hasSuffix("IB") { digits.removeLast(2) } else if digits.hasSuffix("B") { digits.removeLast() }
    switch digits.last {
    case "K": scale = 1 << 10
    case "M": scale = 1 << 20
    case "G": scale = 1 << 30
    case "T": scale = 1 << 40
    default: break
    }
    if scale != 1 { digits.removeLast() }
    guard let n = UInt64(digits) else { return nil }
    let (r, overflow) = n.multipliedReportingOverflow(by: scale)
    return overflow ? nil : r
}
