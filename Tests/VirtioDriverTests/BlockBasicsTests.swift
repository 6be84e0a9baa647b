import Testing
import VirtioCore
import VirtioDrivers
import VirtioPCI
import VirtioRing
import VirtioSoftDevice

@Suite(.leakChecked) struct BlockBasicsTests {
    @Test func writeThenReadBack() throws {
        let (f, blk) = try attach("size=1M")
        #expect(blk.negotiated.contains(VirtioFeature.ringPacked))
        #expect(blk.negotiated.contains(VirtioFeature.inOrder))
        #expect(blk.config.capacitySectors == 2048)
        let w = try blk.allocateBuffer(bytes: 8192)
        let r = try blk.allocateBuffer(bytes: 8192)
        fill(w, lba: 7, gen: 1)
        try blk.write(sector: 7 * 16, from: w)
        try blk.read(sector: 7 * 16, into: r)
        #expect(bytes(w) == bytes(r))
        #expect(f.personality.peek(offset: 7 * 8192, length: 8192) == bytes(w))
        #expect(try blk.serial() == "soft-blk")
        #expect(f.log.violations.isEmpty, "\(f.log.violations)")
    }

    /// GET_ID's buffer is exactly 20 bytes: 19 and 21 are refused before anything is queued.
    @Test func getIDTakesExactlyTwentyBytes() throws {
        let (f, blk) = try attach("size=1M")
        let b = try blk.allocateBuffer(bytes: 64)
        for length: UInt32 in [19, 21, 64] {
            #expect(throws: BlockError.self, "\(length) bytes") {
                _ = try blk.perform(.getID, sector: 0, data: BufferElement(address: b.deviceAddress, length: length))
            }
        }
        #expect(f.personality.counters.getIDs == 0, "the device saw no GET_ID")
        #expect(try blk.serial() == "soft-blk")
    }
}
