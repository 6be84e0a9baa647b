import ArgumentParser
import VirtioAttach
import Foundation
import VirtioCore
import VirtioDrivers
import VirtioRing
import VirtioSoftDevice

extension VirtioCtl {
    /// `virtioctl blk ...`: block I/O on a virtio-blk device.
    struct Blk: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Block I/O on a virtio-blk device.",
            discussion: "LBAs and block counts are in the device's logical block size (blk_size, see `info`).",
            subcommands: [Read.self, Write.self, Flush.self, Discard.self, WriteZeroes.self, ID.self, Bench.self])
    }
}

/// A block range on the command line.
struct BlockRange: ParsableArguments {
    @Option(help: "First logical block.") var lba: UInt64 = 0
    @Option(help: "Number of logical blocks.") var blocks: UInt32 = 1

    func validate() throws {
        guard blocks >= 1 else { throw ValidationError("--blocks must be at least 1") }
    }
}

/// Checks a block range against the device and returns (first 512-byte sector, bytes).
func sectors<T>(_ r: BlockRange, _ blk: BlockDevice<T>, maxBytes: UInt64 = 64 << 20) throws -> (UInt64, Int) {
    let bs = UInt64(blk.config.blockSize)
    let totalBlocks = blk.config.capacityBytes / bs
    let (end, o) = r.lba.addingReportingOverflow(UInt64(r.blocks))
    guard !o, end <= totalBlocks else {
        throw CLIError("blocks \(r.lba)..<\(r.lba &+ UInt64(r.blocks)) are past the end of the device (\(totalBlocks) blocks of \(bs) bytes); nothing was done")
    }
    let bytes = UInt64(r.blocks) * bs
    guard bytes <= maxBytes else {
        throw CLIError("\(r.blocks) blocks (\(bytes) bytes) in one command; the limit is \(maxBytes / bs) blocks; nothing was done")
    }
    return (r.lba * (bs / 512), Int(bytes))
}

struct ReadReport: Codable {
    let operation: String, device: String, lba: UInt64, blocks: UInt32, bytes: Int, elapsed_us: Double, data_hex: String?
}

struct IDReport: Codable {
    let device: String, serial: String
}

/// Result line for JSON output of simple verbs.
struct DoneReport: Codable {
    let operation: String
    let device: String
    let lba: UInt64?
    let blocks: UInt32?
    let bytes: Int?
    let elapsed_us: Double
}

func elapsedMicros(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

extension VirtioCtl.Blk {
    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Read blocks; hex dump to stdout, or raw bytes to --out.")
        @OptionGroup var device: DeviceOptions
        @OptionGroup var range: BlockRange
        @Option(help: "Write the data to this file instead of dumping it.") var out: String?

        func run() throws {
            let device = self.device, range = self.range, out = self.out
            struct Op: BlockDeviceUser {
                let device: DeviceOptions, range: BlockRange, out: String?
                func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws {
                    let (sector, bytes) = try sectors(range, blk)
                    let buffer = try blk.allocateBuffer(bytes: bytes)
                    let start = ContinuousClock.now
                    try blk.read(sector: sector, into: buffer)
                    let us = elapsedMicros(since: start)
                    let data = Data(bytes: buffer.pointer, count: bytes)
                    if let out {
                        guard FileManager.default.createFile(atPath: out, contents: data) else {
                            throw CLIError("cannot write \(out)")
                        }
                    }
                    if device.output == .json {
                        try printJSON(ReadReport(operation: "read", device: blk.device.transport.name, lba: range.lba, blocks: range.blocks,
                                        bytes: bytes, elapsed_us: us, data_hex: out == nil ? data.map { String(format: "%02x", $0) }.joined() : nil))
                    } else if out == nil {
                        hexDump(data, base: range.lba * UInt64(blk.config.blockSize))
                    } else {
                        print("read \(bytes) bytes from LBA \(range.lba) into \(out!)")
                    }
                }
            }
            try device.withBlockDevice(Op(device: device, range: range, out: out))
        }
    }

    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write blocks from --in (a whole number of blocks) or filled with --pattern.")
        @OptionGroup var device: DeviceOptions
        @OptionGroup var range: BlockRange
        @Option(name: .customLong("in"), help: "File to write; its size must be a multiple of the block size (sets --blocks).")
        var input: String?
        @Option(help: "Fill byte, e.g. 0xA5 (used when --in is not given).") var pattern: String = "0x00"

        func run() throws {
            var payload: Data?
            if let input {
                guard let d = FileManager.default.contents(atPath: input) else { throw CLIError("cannot read \(input)") }
                guard !d.isEmpty else { throw CLIError("\(input) is empty; nothing was written") }
                payload = d
            }
            let fill = try parseByte(pattern)
            let device = self.device
            struct Op: BlockDeviceUser {
                let device: DeviceOptions, payload: Data?, fill: UInt8
                var range: BlockRange
                func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws {
                    var range = self.range
                    if let payload {
                        let bs = Int(blk.config.blockSize)
                        guard payload.count % bs == 0 else {
                            throw CLIError("input is \(payload.count) bytes, not a multiple of the \(bs)-byte block size; nothing was written")
                        }
                        range.blocks = UInt32(payload.count / bs)
                    }
                    let (sector, bytes) = try sectors(range, blk)
                    let buffer = try blk.allocateBuffer(bytes: bytes)
                    if let payload {
                        payload.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
                    } else {
                        buffer.pointer.initializeMemory(as: UInt8.self, repeating: fill, count: bytes)
                    }
                    let start = ContinuousClock.now
                    try blk.write(sector: sector, from: buffer)
                    report("write", blk, range, bytes, elapsedMicros(since: start), device.output)
                    if let soft, soft.personality.options.file == nil, device.output == .normal {
                        note("note: soft:blk without file= keeps data in RAM for this command only")
                    }
                }
            }
            try device.withBlockDevice(Op(device: device, payload: payload, fill: fill, range: range))
        }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Flush the device's write cache (VIRTIO_BLK_T_FLUSH).")
        @OptionGroup var device: DeviceOptions
        func run() throws {
            struct Op: BlockDeviceUser {
                let output: OutputFormat
                func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws {
                    let start = ContinuousClock.now
                    try blk.flush()
                    report("flush", blk, nil, nil, elapsedMicros(since: start), output)
                }
            }
            try device.withBlockDevice(Op(output: device.output))
        }
    }

    struct Discard: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Discard blocks (VIRTIO_BLK_T_DISCARD).")
        @OptionGroup var device: DeviceOptions
        @OptionGroup var range: BlockRange
        func run() throws {
            try device.withBlockDevice(RangeOp(output: device.output, range: range, zeroes: false, unmap: false))
        }
    }

    struct WriteZeroes: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "write-zeroes", abstract: "Zero blocks (VIRTIO_BLK_T_WRITE_ZEROES).")
        @OptionGroup var device: DeviceOptions
        @OptionGroup var range: BlockRange
        @Flag(help: "Allow the device to unmap the blocks.") var unmap = false
        func run() throws {
            try device.withBlockDevice(RangeOp(output: device.output, range: range, zeroes: true, unmap: unmap))
        }
    }

    struct ID: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "id", abstract: "Print the device serial (VIRTIO_BLK_T_GET_ID).")
        @OptionGroup var device: DeviceOptions
        func run() throws {
            struct Op: BlockDeviceUser {
                let output: OutputFormat
                func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws {
                    let s = try blk.serial()
                    if output == .json {
                        try printJSON(IDReport(device: blk.device.transport.name, serial: s))
                    } else { print(s) }
                }
            }
            try device.withBlockDevice(Op(output: device.output))
        }
    }
}

/// Discard or write-zeroes over a block range.
struct RangeOp: BlockDeviceUser {
    let output: OutputFormat, range: BlockRange, zeroes: Bool, unmap: Bool
    func run<T: VirtioTransport>(_ blk: BlockDevice<T>, soft: SoftPCIFunction<SoftBlock>?) throws {
        let (sector, bytes) = try sectors(range, blk, maxBytes: UInt64(UInt32.max) * 512)
        let start = ContinuousClock.now
        if zeroes {
            try blk.writeZeroes(sector: sector, sectors: UInt32(bytes / 512), unmap: unmap)
        } else {
            try blk.discard(sector: sector, sectors: UInt32(bytes / 512))
        }
        report(zeroes ? "write-zeroes" : "discard", blk, range, bytes, elapsedMicros(since: start), output)
    }
}

func report<T>(_ op: String, _ blk: BlockDevice<T>, _ range: BlockRange?, _ bytes: Int?, _ us: Double, _ output: OutputFormat) {
    if output == .json {
        try? printJSON(DoneReport(operation: op, device: blk.device.transport.name, lba: range?.lba, blocks: range?.blocks,
                                  bytes: bytes, elapsed_us: us))
    } else if let range, let bytes {
        print("\(op): \(range.blocks) block(s) at LBA \(range.lba) (\(bytes) bytes) in \(String(format: "%.1f", us)) µs")
    } else {
        print("\(op): done in \(String(format: "%.1f", us)) µs")
    }
}

func parseByte(_ text: String) throws -> UInt8 {
    let t = text.lowercased()
    let v = t.hasPrefix("0x") ? UInt8(t.dropFirst(2), radix: 16) : UInt8(t)
    guard let v else { throw CLIError("--pattern \(text): expected a byte such as 0xA5 or 165") }
    return v
}

/// `hexdump -C` style.
func hexDump(_ data: Data, base: UInt64) {
    var line = 0
    let bytes = [UInt8](data)
    while line < bytes.count {
        let chunk = bytes[line..<min(line + 16, bytes.count)]
        let hex = chunk.map { String(format: "%02x", $0) }.joined(separator: " ")
        let ascii = String(chunk.map { (0x20...0x7e).contains($0) ? Character(UnicodeScalar($0)) : "." })
        print(String(format: "%08llx  ", base + UInt64(line)) + hex.padding(toLength: 48, withPad: " ", startingAt: 0) + " |\(ascii)|")
        line += 16
    }
}
