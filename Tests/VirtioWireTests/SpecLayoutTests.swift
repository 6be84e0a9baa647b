import Testing
import VirtioWire

/// Lays out a C struct as the spec declares it (fields in order, each at its natural alignment),
/// so the tests compare `VirtioWire` with offsets computed from the spec's declarations, not with
/// numbers copied from `VirtioWire` itself.
func specOffsets(_ fields: [(type: String, name: String)]) -> [String: (offset: Int, size: Int)] {
    var out: [String: (Int, Int)] = [:]
    var at = 0
    for f in fields {
        let size: Int
        switch f.type {
        case "u8": size = 1
        case "le16": size = 2
        case "le32": size = 4
        case "le64": size = 8
        default:
            // "u8[N]": an array of bytes (padding, reserved).
            size = Int(f.type.dropFirst(3).dropLast())!
        }
        let align = f.type.hasPrefix("u8") ? 1 : size
        at = (at + align - 1) / align * align
        out[f.name] = (at, size)
        at += size
    }
    return out
}

@Suite struct SpecLayoutTests {
    /// `struct virtio_pci_common_cfg` as `transport-pci.tex` 4.1.4.3 declares it (1.3 with admin queues).
    static let commonCfg: [(type: String, name: String)] = [
        ("le32", "device_feature_select"), ("le32", "device_feature"), ("le32", "driver_feature_select"),
        ("le32", "driver_feature"), ("le16", "config_msix_vector"), ("le16", "num_queues"), ("u8", "device_status"),
        ("u8", "config_generation"), ("le16", "queue_select"), ("le16", "queue_size"), ("le16", "queue_msix_vector"),
        ("le16", "queue_enable"), ("le16", "queue_notify_off"), ("le64", "queue_desc"), ("le64", "queue_driver"),
        ("le64", "queue_device"), ("le16", "queue_notif_config_data"), ("le16", "queue_reset"),
        ("le16", "admin_queue_index"), ("le16", "admin_queue_num"),
    ]

    @Test func commonConfigMatchesTheSpecStruct() {
        let spec = specOffsets(Self.commonCfg)
        let ours: [String: CommonConfigField] = [
            "device_feature_select": .deviceFeatureSelect, "device_feature": .deviceFeature,
            "driver_feature_select": .driverFeatureSelect, "driver_feature": .driverFeature,
            "config_msix_vector": .configMSIXVector, "num_queues": .numQueues, "device_status": .deviceStatus,
            "config_generation": .configGeneration, "queue_select": .queueSelect, "queue_size": .queueSize,
            "queue_msix_vector": .queueMSIXVector, "queue_enable": .queueEnable, "queue_notify_off": .queueNotifyOff,
            "queue_desc": .queueDescLow, "queue_driver": .queueDriverLow, "queue_device": .queueDeviceLow,
            "queue_notif_config_data": .queueNotifConfigData, "queue_reset": .queueReset,
            "admin_queue_index": .adminQueueIndex, "admin_queue_num": .adminQueueNum,
        ]
        #expect(ours.count == spec.count)
        for (name, field) in ours {
            let s = spec[name]!
            #expect(field.offset == s.offset, "\(name)")
            // 64-bit fields are accessed as aligned 32-bit halves; the high half is 4 bytes on.
            #expect(field.width == min(s.size, 4), "\(name) width")
            if s.size == 8 { #expect(CommonConfigField(offset: s.offset + 4, width: 4) != nil, "\(name) high half") }
        }
        // Every offset we name is a spec field (or a 64-bit field's high half), nothing more.
        #expect(CommonConfigField.allCases.count == spec.count + 3)
        #expect(VirtioPCIWire.commonMinimumLength == spec["queue_notif_config_data"]!.offset)
        #expect(VirtioPCIWire.commonFullLength == spec["admin_queue_num"]!.offset + 2)
        // Wrong widths name no field (the soft device reports them as violations).
        #expect(CommonConfigField(offset: 0x14, width: 2) == nil)
        #expect(CommonConfigField(offset: 0x20, width: 8) == nil)
        #expect(CommonConfigField(offset: 0x13, width: 1) == nil)
    }

    @Test func capabilityStructsMatchTheSpec() {
        // struct virtio_pci_cap, then virtio_pci_notify_cap / virtio_pci_cfg_cap's fifth dword.
        let cap = specOffsets([("u8", "cap_vndr"), ("u8", "cap_next"), ("u8", "cap_len"), ("u8", "cfg_type"),
                               ("u8", "bar"), ("u8", "id"), ("u8[2]", "padding"), ("le32", "offset"),
                               ("le32", "length"), ("le32", "notify_off_multiplier")])
        #expect(VirtioPCICapField.vendor == cap["cap_vndr"]!.offset)
        #expect(VirtioPCICapField.next == cap["cap_next"]!.offset)
        #expect(VirtioPCICapField.length == cap["cap_len"]!.offset)
        #expect(VirtioPCICapField.configType == cap["cfg_type"]!.offset)
        #expect(VirtioPCICapField.bar == cap["bar"]!.offset)
        #expect(VirtioPCICapField.id == cap["id"]!.offset)
        #expect(VirtioPCICapField.offset == cap["offset"]!.offset)
        #expect(VirtioPCICapField.windowLength == cap["length"]!.offset)
        #expect(VirtioPCICapField.notifyOffMultiplier == cap["notify_off_multiplier"]!.offset)
        #expect(VirtioPCICapField.pciCfgData == cap["notify_off_multiplier"]!.offset)
        #expect(VirtioPCICapField.baseLength == 16 && VirtioPCICapField.extendedLength == 20)
        // cfg_type values: 1 COMMON, 2 NOTIFY, 3 ISR, 4 DEVICE, 5 PCI_CFG, 8 SHARED_MEMORY, 9 VENDOR.
        #expect([VirtioPCIWire.capCommon, VirtioPCIWire.capNotify, VirtioPCIWire.capISR, VirtioPCIWire.capDevice,
                 VirtioPCIWire.capPCICfg, VirtioPCIWire.capSharedMemory, VirtioPCIWire.capVendor] == [1, 2, 3, 4, 5, 8, 9])
        #expect(VirtioPCIWire.vendorID == 0x1AF4 && VirtioPCIWire.noVector == 0xFFFF)
        // Modern IDs are 0x1040 + type; the transitional ones from the spec's table.
        #expect(VirtioPCIWire.deviceID(pciDeviceID: 0x1042) == 2)
        #expect(VirtioPCIWire.deviceID(pciDeviceID: 0x1001) == 2 && VirtioPCIWire.deviceID(pciDeviceID: 0x1002) == 5)
        #expect(VirtioPCIWire.deviceID(pciDeviceID: 0x10FF) == nil)
    }

    @Test func extendedCapabilitiesMatchPCIe() {
        // SR-IOV extended capability (PCIe base spec 9.3.3), from its header.
        let s = specOffsets([("le32", "header"), ("le32", "capabilities"), ("le16", "control"), ("le16", "status"),
                             ("le16", "initial_vfs"), ("le16", "total_vfs"), ("le16", "num_vfs"), ("u8", "dependency"),
                             ("u8", "reserved"), ("le16", "first_vf_offset"), ("le16", "vf_stride"), ("le16", "reserved2"),
                             ("le16", "vf_device_id")])
        #expect(SRIOVCapField.capabilities == s["capabilities"]!.offset && SRIOVCapField.control == s["control"]!.offset)
        #expect(SRIOVCapField.initialVFs == s["initial_vfs"]!.offset && SRIOVCapField.totalVFs == s["total_vfs"]!.offset)
        #expect(SRIOVCapField.numVFs == s["num_vfs"]!.offset && SRIOVCapField.firstVFOffset == s["first_vf_offset"]!.offset)
        #expect(SRIOVCapField.vfStride == s["vf_stride"]!.offset && SRIOVCapField.vfDeviceID == s["vf_device_id"]!.offset)
        #expect(PCIConfig.extCapSRIOV == 0x0010 && PCIConfig.extendedStart == 0x100)
        // MSI-X (PCI 6.8.2): u8 id; u8 next; le16 message control; le32 table; le32 PBA.
        let m = specOffsets([("u8", "id"), ("u8", "next"), ("le16", "control"), ("le32", "table"), ("le32", "pba")])
        #expect(MSIXCapField.control == m["control"]!.offset && MSIXCapField.table == m["table"]!.offset)
        #expect(MSIXCapField.pendingBits == m["pba"]!.offset && PCIConfig.capabilityMSIX == 0x11)
    }

    /// `struct virtio_blk_config` as `device-types/blk/description.tex` declares it (through write zeroes).
    static let blkConfig: [(type: String, name: String)] = [
        ("le64", "capacity"), ("le32", "size_max"), ("le32", "seg_max"),
        ("le16", "geometry.cylinders"), ("u8", "geometry.heads"), ("u8", "geometry.sectors"), ("le32", "blk_size"),
        ("u8", "topology.physical_block_exp"), ("u8", "topology.alignment_offset"), ("le16", "topology.min_io_size"),
        ("le32", "topology.opt_io_size"), ("u8", "writeback"), ("u8", "unused0"), ("le16", "num_queues"),
        ("le32", "max_discard_sectors"), ("le32", "max_discard_seg"), ("le32", "discard_sector_alignment"),
        ("le32", "max_write_zeroes_sectors"), ("le32", "max_write_zeroes_seg"), ("u8", "write_zeroes_may_unmap"),
        ("u8[3]", "unused1"), ("le32", "max_secure_erase_sectors"),
    ]

    @Test func blockConfigMatchesTheSpecStruct() {
        let s = specOffsets(Self.blkConfig)
        typealias F = BlockConfigField
        let pairs: [(Int, String)] = [
            (F.capacity, "capacity"), (F.sizeMax, "size_max"), (F.segMax, "seg_max"), (F.geometry, "geometry.cylinders"),
            (F.blockSize, "blk_size"), (F.physicalBlockExponent, "topology.physical_block_exp"),
            (F.alignmentOffset, "topology.alignment_offset"), (F.minIOSize, "topology.min_io_size"),
            (F.optimalIOSize, "topology.opt_io_size"), (F.writeback, "writeback"), (F.numQueues, "num_queues"),
            (F.maxDiscardSectors, "max_discard_sectors"), (F.maxDiscardSegments, "max_discard_seg"),
            (F.discardSectorAlignment, "discard_sector_alignment"), (F.maxWriteZeroesSectors, "max_write_zeroes_sectors"),
            (F.maxWriteZeroesSegments, "max_write_zeroes_seg"), (F.writeZeroesMayUnmap, "write_zeroes_may_unmap"),
        ]
        for (ours, name) in pairs { #expect(ours == s[name]!.offset, "\(name)") }
        #expect(F.length >= s["write_zeroes_may_unmap"]!.offset + 1)
        // QEMU 7.2's struct ends before max_secure_erase_sectors: qemu-storage-daemon's GET_CONFIG limit.
        #expect(F.vhostUserLength == s["max_secure_erase_sectors"]!.offset)
    }

    /// `struct virtio_net_config` and `struct virtio_net_hdr` as `device-types/net/description.tex` declares them.
    static let netConfig: [(type: String, name: String)] = [
        ("u8[6]", "mac"), ("le16", "status"), ("le16", "max_virtqueue_pairs"), ("le16", "mtu"), ("le32", "speed"),
        ("u8", "duplex"), ("u8", "rss_max_key_size"), ("le16", "rss_max_indirection_table_length"),
        ("le32", "supported_hash_types"),
    ]
    static let netHeader: [(type: String, name: String)] = [
        ("u8", "flags"), ("u8", "gso_type"), ("le16", "hdr_len"), ("le16", "gso_size"), ("le16", "csum_start"),
        ("le16", "csum_offset"), ("le16", "num_buffers"),
    ]

    @Test func netConfigAndHeaderMatchTheSpecStructs() {
        let c = specOffsets(Self.netConfig)
        typealias F = NetConfigField
        let pairs: [(Int, String)] = [
            (F.mac, "mac"), (F.status, "status"), (F.maxVirtqueuePairs, "max_virtqueue_pairs"), (F.mtu, "mtu"),
            (F.speed, "speed"), (F.duplex, "duplex"), (F.rssMaxKeySize, "rss_max_key_size"),
            (F.rssMaxIndirectionTableLength, "rss_max_indirection_table_length"), (F.supportedHashTypes, "supported_hash_types"),
        ]
        for (ours, name) in pairs { #expect(ours == c[name]!.offset, "\(name)") }
        #expect(F.macLength == c["mac"]!.size && NetStatusBit.linkUp == 1 && NetStatusBit.announce == 2)
        let h = specOffsets(Self.netHeader)
        #expect(NetHeader.size == h["num_buffers"]!.offset + 2)
        let header = NetHeader(flags: NetHeader.needsChecksum, gsoType: NetHeader.gsoTCPv4, headerLength: 0x0102, gsoSize: 0x0304,
                               checksumStart: 0x0506, checksumOffset: 0x0708, numBuffers: 0x090A)
        var bytes = [UInt8](repeating: 0xEE, count: 12)
        bytes.withUnsafeMutableBytes { header.store(to: $0.baseAddress!) }
        #expect(bytes[h["flags"]!.offset] == 1 && bytes[h["gso_type"]!.offset] == 1)
        for (name, v) in [("hdr_len", 0x0102), ("gso_size", 0x0304), ("csum_start", 0x0506), ("csum_offset", 0x0708), ("num_buffers", 0x090A)] {
            let o = h[name]!.offset
            #expect(Int(bytes[o]) | Int(bytes[o + 1]) << 8 == v, "\(name) little-endian at \(o)")
        }
        #expect(bytes.withUnsafeBytes { NetHeader(loading: $0.baseAddress!) } == header)
        // The spec's constants: flags, gso types, control classes and acks.
        #expect(NetHeader.dataValid == 2 && NetHeader.rscInfo == 4 && NetHeader.gsoUDP == 3 && NetHeader.gsoTCPv6 == 4
                && NetHeader.gsoUDPL4 == 5 && NetHeader.gsoECN == 0x80)
        #expect(NetControl.ok == 0 && NetControl.err == 1 && NetControl.classMQ == 4 && NetControl.classAnnounce == 3
                && NetControl.macAddrSet == 1 && NetControl.pairsMax == 0x8000)
    }

    @Test func blockConfigEncodesWhereTheSpecSaysAndDecodesBack() {
        var c = BlockConfig(capacitySectors: 0x0102_0304_0506_0708, blockSize: 4096, numQueues: 3)
        c.sizeMax = 0x1111_1111
        c.segMax = 0x2222_2222
        c.physicalBlockExponent = 3
        c.alignmentOffset = 1
        c.minIOSize = 0x3344
        c.optimalIOSize = 0x5566_7788
        c.writeback = 1
        c.maxDiscardSectors = 0xAA
        c.maxDiscardSegments = 0xBB
        c.discardSectorAlignment = 0xCC
        c.maxWriteZeroesSectors = 0xDD
        c.maxWriteZeroesSegments = 0xEE
        c.writeZeroesMayUnmap = true
        let bytes = c.encoded()
        let s = specOffsets(Self.blkConfig)
        func le(_ name: String) -> UInt64 {
            let (o, n) = s[name]!
            return (0..<n).reduce(UInt64(0)) { $0 | UInt64(bytes[o + $1]) << (8 * $1) }
        }
        #expect(le("capacity") == 0x0102_0304_0506_0708)
        #expect(le("blk_size") == 4096 && le("num_queues") == 3 && le("topology.min_io_size") == 0x3344)
        #expect(le("topology.opt_io_size") == 0x5566_7788 && le("max_write_zeroes_seg") == 0xEE)
        #expect(le("write_zeroes_may_unmap") == 1 && le("writeback") == 1 && le("unused0") == 0)
        let back = BlockConfig.decode(.init(rawValue: 0xFF)) { (o, w) -> UInt64 in
            (0..<w).reduce(UInt64(0)) { $0 | UInt64(bytes[o + $1]) << (8 * $1) }
        }
        #expect(back == c)
        // Fields whose feature is off stay nil: the driver never reads them.
        let bare = BlockConfig.decode([]) { (o, w) -> UInt64 in
            (0..<w).reduce(UInt64(0)) { $0 | UInt64(bytes[o + $1]) << (8 * $1) }
        }
        #expect(bare == BlockConfig(capacitySectors: c.capacitySectors))
    }

    @Test func blockRequestWireMatchesTheSpec() {
        // VIRTIO_BLK_T_IN 0, OUT 1, FLUSH 4, GET_ID 8, GET_LIFETIME 10, DISCARD 11, WRITE_ZEROES 13, SECURE_ERASE 14.
        #expect([BlockRequestType.read, BlockRequestType.write, BlockRequestType.flush, BlockRequestType.getID,
                 BlockRequestType.getLifetime, BlockRequestType.discard, BlockRequestType.writeZeroes,
                 BlockRequestType.secureErase] == [0, 1, 4, 8, 10, 11, 13, 14])
        #expect([BlockStatusByte.ok, BlockStatusByte.ioError, BlockStatusByte.unsupported] == [0, 1, 2])
        let hdr = specOffsets([("le32", "type"), ("le32", "reserved"), ("le64", "sector")])
        var raw = [UInt8](repeating: 0, count: BlockRequestHeader.size)
        raw.withUnsafeMutableBytes { BlockRequestHeader(type: 0x0A0B_0C0D, sector: 0x1122_3344_5566_7788).store(to: $0.baseAddress!) }
        #expect(raw[hdr["type"]!.offset] == 0x0D && raw[hdr["type"]!.offset + 3] == 0x0A)
        #expect(raw[hdr["sector"]!.offset] == 0x88 && raw[hdr["sector"]!.offset + 7] == 0x11)
        #expect(raw.withUnsafeBytes { BlockRequestHeader(loading: $0.baseAddress!) }
                == BlockRequestHeader(type: 0x0A0B_0C0D, sector: 0x1122_3344_5566_7788))
        let seg = specOffsets([("le64", "sector"), ("le32", "num_sectors"), ("le32", "flags")])
        var sraw = [UInt8](repeating: 0, count: BlockDiscardSegment.size)
        sraw.withUnsafeMutableBytes { BlockDiscardSegment(sector: 5, sectors: 6, flags: BlockDiscardSegment.unmap).store(to: $0.baseAddress!) }
        #expect(sraw[seg["sector"]!.offset] == 5 && sraw[seg["num_sectors"]!.offset] == 6 && sraw[seg["flags"]!.offset] == 1)
    }

    @Test func adminCommandHeaderMatchesTheSpec() {
        // struct virtio_admin_cmd: le16 opcode; le16 group_type; u8 reserved1[12]; le64 group_member_id; data.
        let h = specOffsets([("le16", "opcode"), ("le16", "group_type"), ("u8[12]", "reserved1"), ("le64", "group_member_id")])
        let cmd = AdminCommand(opcode: 0x0F, group: 1, memberID: 0x0102, data: [9])
        let b = cmd.readable
        #expect(AdminCommand.headerSize == h["group_member_id"]!.offset + 8)
        #expect(b[h["opcode"]!.offset] == 0x0F && b[h["group_type"]!.offset] == 1 && b[h["group_member_id"]!.offset] == 2)
        #expect(b.count % 8 == 0 && b[AdminCommand.headerSize] == 9)
        // le16 status; le16 status_qualifier; u8 reserved2[4]; result.
        let r = AdminResponse(status: AdminStatus(22), qualifier: AdminQualifier(3), result: [7]).encoded
        #expect(AdminCommand.statusSize == 8 && r.count == 9 && r[0] == 22 && r[2] == 3 && r[8] == 7)
        // VIRTIO_ADMIN_CMD_LIST_QUERY 0, LIST_USE 1, ... DEV_MODE_SET 0x11; group SR-IOV = 1.
        #expect(AdminOpcode.listQuery.rawValue == 0 && AdminOpcode.legacyNotifyInfo.rawValue == 6)
        #expect(AdminOpcode.devPartsGet.rawValue == 0xF && AdminOpcode.devModeSet.rawValue == 0x11)
        #expect(AdminGroup.sriov.rawValue == 1)
    }

    @Test func balloonConfigMatchesTheSpecStruct() {
        // struct virtio_balloon_config { le32 num_pages; le32 actual; le32 free_page_hint_cmd_id; le32 poison_val; }
        let s = specOffsets([("le32", "num_pages"), ("le32", "actual"), ("le32", "free_page_hint_cmd_id"), ("le32", "poison_val")])
        #expect(BalloonConfigField.numPages == s["num_pages"]!.offset && BalloonConfigField.actual == s["actual"]!.offset)
        #expect(BalloonConfigField.freePageHintCommandID == s["free_page_hint_cmd_id"]!.offset)
        #expect(BalloonConfigField.poisonValue == s["poison_val"]!.offset)
        let bytes = BalloonConfig(numPages: 0x0102_0304, actual: 5).encoded()
        #expect(bytes == [4, 3, 2, 1, 5, 0, 0, 0] && bytes.count == BalloonConfigField.length)
        let back = BalloonConfig.decode { (o, w) -> UInt64 in (0..<w).reduce(UInt64(0)) { $0 | UInt64(bytes[o + $1]) << (8 * $1) } }
        #expect(back == BalloonConfig(numPages: 0x0102_0304, actual: 5))
    }

    @Test func statisticsEntryIsTenPackedBytes() {
        // struct virtio_balloon_stat { le16 tag; le64 val; } __attribute__((packed)).
        let b = StatEntry.encode([StatEntry(tag: 0x0102, value: 0x0A0B_0C0D_0E0F_1011)])
        #expect(StatEntry.size == 10 && b == [0x02, 0x01, 0x11, 0x10, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A])
        #expect(StatEntry.decode(b) == [StatEntry(tag: 0x0102, value: 0x0A0B_0C0D_0E0F_1011)])
        #expect(StatEntry.decode(b + [0]) == nil)
    }
}
