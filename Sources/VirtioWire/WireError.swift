/// Bytes from the other side that do not decode: says what was wrong and where.
public enum WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A structure that runs short, claims more than follows, or breaks an order or length rule.
    case malformed(String)

    public var description: String {
        switch self {
        case let .malformed(why): why
        }
    }
}
