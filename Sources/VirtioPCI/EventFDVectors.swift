@_exported import HostIO

extension EventFDSet {
    /// One new eventfd per interrupt vector, all or none.
    public static func vectors(_ count: Int) throws(PCIError) -> EventFDSet {
        do { return try EventFDSet(count: count) } catch { throw .io(error.description) }
    }
}
