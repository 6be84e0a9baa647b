import Foundation
import Testing
@testable import VirtioCore
import VirtioDrivers
import VirtioRing

/// MSI-X mode: vectors programmed as Linux lays them out, completions waited for on eventfds.
@Suite(.leakChecked) struct InterruptModeTests {
    func interruptOptions(queues: Int? = nil) -> BlockAttachOptions {
        var o = BlockAttachOptions()
        o.interrupts = true
        o.queues = queues
        return o
    }

    @Test(arguments: ["packed=off", "packed=on", "packed=on,event_idx=off", "packed=off,event_idx=off"])
    func verifiedIOCompletesThroughEventfds(spec: String) throws {
        let (_, blk) = try attach(spec + ",queues=2", options: interruptOptions())
        #expect(blk.interruptMode)
        #expect(blk.device.queues.map(\.vector) == [1, 2])  // vector 0 is the config vector
        let buffer = try blk.allocateBuffer(bytes: 4096)
        for lba in UInt64(0)..<64 {
            fill(buffer, lba: lba, gen: 7)
            try blk.write(sector: lba * 8, from: buffer)
        }
        for lba in UInt64(0)..<64 {
            buffer.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
            try blk.read(sector: lba * 8, into: buffer)
            #expect(bytes(buffer) == patternBytes(lba: lba, gen: 7, length: 4096))
        }
        // The soft device completes inside the kick, so nothing slept; but it signalled the
        // queue's vector for the used buffers, and only that vector.
        let fds = [blk.withQueue(0) { $0.interruptFD }, blk.withQueue(1) { $0.interruptFD }]
        #expect(eventCount(fds[0]) > 0)
        #expect(eventCount(fds[1]) == 0)
    }

    func eventCount(_ fd: Int32) -> UInt64 {
        var n: UInt64 = 0
        return read(fd, &n, 8) == 8 ? n : 0  // nonblocking: EAGAIN reads as 0
    }

    /// A waiter that sleeps until another thread rings the doorbell and the device signals.
    @Test(arguments: [false, true])
    func waiterSleepsUntilTheDeviceSignals(packed: Bool) throws {
        let (_, blk) = try attach("packed=\(packed ? "on" : "off")", options: interruptOptions())
        let buffer = try blk.allocateBuffer(bytes: 512)
        struct Doorbell: @unchecked Sendable { let ring: () -> Void }
        try blk.withQueue(0) { queue throws(BlockError) in
            // Published but not notified: the device has not seen it.
            try queue.submit(.read, sector: 0, data: BufferElement(address: buffer.deviceAddress, length: 512), tag: 9)
            let transport = queue.virtqueue.transport, target = queue.virtqueue.target
            let bell = Doorbell { transport.notify(target, value: UInt32(target.value16)) }
            let t = Thread { usleep(50_000); bell.ring() }
            t.start()
            var done: BlockCompletion?
            var waits = 0
            while done == nil, waits < 50 {
                done = try queue.poll()
                if done == nil { queue.waitForInterrupt(timeoutMilliseconds: 1000); waits += 1 }
            }
            #expect(done?.tag == 9 && done?.result == .ok)
            #expect(queue.virtqueue.counters.interrupts >= 1)
        }
    }

    @Test func queuesAreLimitedToTheVectorTable() throws {
        // All queues unless told: as many as the table serves, one vector each.
        let (_, blk) = try attach("queues=4,msix=3", options: interruptOptions())
        #expect(blk.device.queues.map(\.vector) == [1, 2])
        // Asked for more than the table serves: a clear error, nothing left running.
        let f = try softBlock("queues=4,msix=3")
        let t = try SoftTransport(function: f)
        #expect { try BlockDevice(transport: t, options: interruptOptions(queues: 4)) } throws: {
            "\($0)".contains("4 queues in interrupt mode need 5 MSI-X vectors") && "\($0)".contains("--queues 2")
        }
        #expect(try !t.readStatus().contains(.driverOK))
    }

    @Test func oneVectorIsAClearErrorAndLeavesTheDeviceStopped() throws {
        let f = try softBlock("msix=1")
        let t = try SoftTransport(function: f)
        #expect { try BlockDevice(transport: t, options: interruptOptions()) } throws: {
            "\($0)".contains("1 MSI-X vector(s); interrupt mode needs at least 2")
        }
        #expect(try !t.readStatus().contains(.driverOK))
    }

    @Test func pollModeAsksForNoInterrupts() throws {
        let (_, blk) = try attach("queues=2")
        #expect(!blk.interruptMode)
        #expect(blk.device.queues.map(\.vector) == [nil, nil])
        let buffer = try blk.allocateBuffer(bytes: 512)
        try blk.read(sector: 0, into: buffer)
        #expect(blk.counters(queue: 0).interrupts == 0)
    }
}
