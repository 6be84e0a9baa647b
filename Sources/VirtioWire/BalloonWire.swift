/// Offsets of `struct virtio_balloon_config` fields (`device-types/balloon/description.tex`).
public enum BalloonConfigField {
    /// le32 num_pages: the balloon size the device asks for, in 4 KiB pages.
    public static let numPages = 0
    /// le32 actual: the pages the driver has given up.
    public static let actual = 4
    /// le32 free_page_hint_cmd_id (FREE_PAGE_HINT) and le32 poison_val (PAGE_POISON).
    public static let freePageHintCommandID = 8, poisonValue = 12
    /// The bytes the project's device exposes (num_pages and actual: it offers neither hint nor poison).
    public static let length = 8
}

/// `struct virtio_balloon_config` as far as this project uses it.
public struct BalloonConfig: Sendable, Equatable {
    public var numPages: UInt32
    public var actual: UInt32

    public init(numPages: UInt32, actual: UInt32) {
        self.numPages = numPages
        self.actual = actual
    }

    /// Reads the fields through `read(offset, width)`, each with its natural width.
    public static func decode<E: Error>(read: (_ offset: Int, _ width: Int) throws(E) -> UInt64) throws(E) -> BalloonConfig {
        BalloonConfig(numPages: UInt32(truncatingIfNeeded: try read(BalloonConfigField.numPages, 4)),
                      actual: UInt32(truncatingIfNeeded: try read(BalloonConfigField.actual, 4)))
    }

    /// The configuration bytes a device exposes.
    public func encoded() -> [UInt8] {
        var w = LEWriter()
        w.u32(numPages)
        w.u32(actual)
        return w.out
    }
}
