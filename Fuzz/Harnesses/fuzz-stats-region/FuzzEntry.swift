// fuzz-stats-region: the statistics region as a reader meets it (the file may come from anyone):
// StatsLayout.parse, then StatsRegionReader over a file holding the same bytes, used the way
// `virtioctl stats` uses it (snapshot, every value of every descriptor, staleReason); and
// StatEntry.decode, the statistics-queue payload parser. Nothing may trap, and a layout parse
// accepts must be one the reader can copy without leaving the region.
//
// Input: the region bytes, whole.
#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import FuzzReplay
import VirtioWire

/// One file per fuzzing process, rewritten for every input (tmpfs when there is one: no disk I/O).
let regionPath: String = {
    let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    return "\(dir)/fuzz-stats-region-\(getpid())"
}()
/// Created once and rewritten in place (creating and unlinking a tmpfs file per input cost more
/// than the input); removed at exit, and by tools/fuzz after a crash.
let regionFD: Int32 = {
    let fd = open(regionPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    precondition(fd >= 0, "cannot create \(regionPath)")
    atexit { _ = unlink(regionPath) }
    return fd
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    statEntries(bytes)
    guard let layout = try? StatsLayout.parse(bytes) else { return 0 }
    // snapshot() copies valueCount u64s from dataOffset; a layout that lets it run past the
    // region reads memory that is not the region (SIGBUS past the file, or another mapping).
    precondition(layout.dataOffset + layout.valueCount * 8 <= bytes.count,
                 "parse accepted \(layout.descriptors.count) descriptors totalling \(layout.valueCount) values at data offset \(layout.dataOffset), but the region is \(bytes.count) bytes")
    readBack(bytes, layout)
    return 0
}

/// The statistics-queue payload: 10-byte entries; re-encoding gives the same bytes.
func statEntries(_ bytes: [UInt8]) {
    guard let entries = StatEntry.decode(bytes) else { return }
    precondition(StatEntry.encode(entries) == bytes, "stat entries do not round-trip")
}

/// The same bytes through the file reader, consumed as `virtioctl stats` does.
func readBack(_ bytes: [UInt8], _ parsed: StatsLayout) {
    // The file holds exactly this input's bytes: cut to its length, then overwritten from 0.
    precondition(ftruncate(regionFD, off_t(bytes.count)) == 0, "cannot resize \(regionPath)")
    let written = bytes.withUnsafeBytes { pwrite(regionFD, $0.baseAddress, $0.count, 0) }
    precondition(written == bytes.count, "short write to \(regionPath)")
    guard let reader = try? StatsRegionReader(path: regionPath) else { return }
    precondition(reader.layout == parsed, "the reader parsed the file differently from StatsLayout.parse")
    // An odd sequence count makes snapshot() spin (by design: a writer mid-update); keep it short.
    guard let snap = try? reader.snapshot(tries: 2) else { return }
    for d in reader.layout.descriptors {
        for i in 0..<Int(d.size) { _ = snap.value(d, i) }
    }
    _ = snap.heartbeat
    _ = snap.writerPID
    // staleReason retries snapshot 1000 times with sleeps when the count is odd; snapshot succeeded, so it is even.
    _ = reader.staleReason
}

#if !FUZZING
/// Without libFuzzer: replays crash files (or directories of them).
@main
enum Replay {
    static func main() { FuzzReplay.run(fuzzOne) }
}
#endif
