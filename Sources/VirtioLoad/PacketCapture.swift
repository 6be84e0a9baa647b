import CPcap
#if canImport(Glibc)
import Glibc
#endif

/// A pcap file of Ethernet frames, written with libpcap (tcpdump and Wireshark read it).
public final class PacketCapture {
    private let handle: OpaquePointer
    private let dumper: OpaquePointer
    public let path: String
    public private(set) var frames: UInt64 = 0

    /// Creates (or truncates) `path`; frames longer than `snapLength` are cut to it, as tcpdump -s does.
    public init(path: String, snapLength: Int32 = 65535) throws(CaptureError) {
        guard let h = pcap_open_dead(DLT_EN10MB, snapLength) else { throw .open(path: path, why: "pcap_open_dead failed") }
        guard let d = pcap_dump_open(h, path) else {
            let why = String(cString: pcap_geterr(h))
            pcap_close(h)
            throw .open(path: path, why: why)
        }
        handle = h
        dumper = d
        self.path = path
    }

    deinit {
        pcap_dump_close(dumper)
        pcap_close(handle)
    }

    /// Appends one frame of `length` bytes (the first `segment` of them at `bytes`; a merged frame
    /// comes as its segments, joined by the caller into `scratch`). Allocates nothing.
    @inlinable
    public func write(_ bytes: UnsafeRawPointer, length: Int) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var header = pcap_pkthdr()
        header.ts.tv_sec = ts.tv_sec
        header.ts.tv_usec = ts.tv_nsec / 1000
        header.caplen = UInt32(min(length, 65535))
        header.len = UInt32(length)
        append(&header, bytes)
    }

    @usableFromInline
    func append(_ header: UnsafePointer<pcap_pkthdr>, _ bytes: UnsafeRawPointer) {
        pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), header,
                  bytes.assumingMemoryBound(to: UInt8.self))
        frames &+= 1
    }

    /// Writes what is buffered to the file.
    public func flush() { pcap_dump_flush(dumper) }

    /// Every frame in a capture file, read with libpcap (for tests and `check`).
    public static func read(path: String) throws(CaptureError) -> [[UInt8]] {
        var err = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let h = pcap_open_offline(path, &err) else { throw .open(path: path, why: String(cString: err)) }
        defer { pcap_close(h) }
        guard pcap_datalink(h) == DLT_EN10MB else { throw .open(path: path, why: "not an Ethernet capture") }
        var out: [[UInt8]] = []
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while pcap_next_ex(h, &header, &data) == 1, let header, let data {
            out.append(Array(UnsafeBufferPointer(start: data, count: Int(header.pointee.caplen))))
        }
        return out
    }
}

/// Why a capture file could not be opened.
public enum CaptureError: Error, CustomStringConvertible {
    case open(path: String, why: String)
    public var description: String {
        switch self { case let .open(path, why): "capture file \(path): \(why)" }
    }
}
