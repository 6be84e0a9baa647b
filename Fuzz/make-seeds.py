#!/usr/bin/env python3
"""Writes the seed inputs under Fuzz/seeds/<target>/: small, valid examples of what each harness
parses (see the header comment of Sources/<target>/FuzzEntry.swift for the input formats).
Re-run after changing an input format: python3 Fuzz/make-seeds.py"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def seed(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)

# --- fuzz-used-ring: [mode, size] + ops (op % 12: 0 add chain, 5 pop, 6 push popped, 8 poll, 9 drain,
# 10 driver notifications, 11 device notifications, 3 raw device write). Mode bits: 1 packed,
# 2 in-order, 4 event idx, 8 indirect, high nibble: indirect table size - 2.
def op(kind, param=0):  # the op byte b with b % 12 == kind and b >> 4 == param
    return next(b for b in range(param * 16, param * 16 + 16) if b % 12 == kind)

def chain(k, m, lengths):
    return [0, k | m << 3] + [b for n in lengths for b in u16(n)]

def ring_ops(buffers):
    ops = []
    for _ in range(buffers):
        ops += chain(1, 1, [16, 512])
    ops += [op(5, 3)]                # device pops up to 4
    ops += [6, 0, 0] * buffers       # device returns each, honest length
    ops += [9, op(10, 1), op(11, 0)] # drain; enable used notifications; device disables avail notifications
    return ops

seed("fuzz-used-ring", "split-8", [0x00, 3] + ring_ops(3))
seed("fuzz-used-ring", "packed-5-all-features", [0x1F, 4] + ring_ops(3) + chain(2, 2, [8, 8, 64, 64]) + [5, 6, 2, 0, 9])
seed("fuzz-used-ring", "split-4-in-order-batch", [0x06, 2] + chain(0, 1, [100]) * 3 + [op(5, 2), 6, 1, 2, 9])
seed("fuzz-used-ring", "packed-3-raw-write", [0x01, 2] + chain(1, 1, [4, 4]) + [3, 1, 14, 0, 0x80, 0x80, 0, 0, op(8, 2), 9])

# --- fuzz-admin-result: [decoder] + what the device wrote.
seed("fuzz-admin-result", "status-ok", [0] + list(u16(0) + u16(0) + u32(0)) + [1, 2, 3, 4])
seed("fuzz-admin-result", "status-einval-member", [0] + list(u16(22) + u16(5) + u32(0)))
seed("fuzz-admin-result", "list-query", [1] + list(u64(0x3FFFF)))
seed("fuzz-admin-result", "legacy-notify", [2] + [1, 2] + [0] * 6 + list(u64(0x3000)) + [2, 4] + [0] * 6 + list(u64(0x1000)) + [0] * 32)
seed("fuzz-admin-result", "dev-parts-cap", [3, 4, 1])

def part(t, value, flags=0, selector=0):
    return list(u16(t)) + [flags, 0] + list(u64(selector)) + list(u32(len(value))) + list(value)

vq_cfg = u16(64) + u16(1) + u16(1) + u16(0) + u64(0x100000) + u64(0x101000) + u64(0x102000)
parts = (part(0x100, u64(0x1_3000_0000), flags=1) + part(0x101, u64(0x1_0000_0000)) + part(0x102, u16(0), selector=0x10)
         + part(0x103, [0x0F]) + part(0x104, vq_cfg) + part(0x105, u16(0) + u16(0) + u32(0))
         + part(0xFFFE, u16(5) + u16(5) + u32(0), flags=1))
seed("fuzz-admin-result", "dev-parts-member-state", [4] + parts)
seed("fuzz-admin-result", "vq-cfg", [5] + list(vq_cfg))
seed("fuzz-admin-result", "command-readable", [6 | 2 << 3] + list(u16(0xF) + u16(1) + bytes(12) + u64(1)) + [0] * 8)
seed("fuzz-admin-result", "legacy-read", [7 | 4 << 3, 0x11, 0x22, 0x33, 0x44])

# --- fuzz-stats-region: a region as StatsLayout.encoded writes it (native endian: x86-64/arm64 little).
def stats_region(stats, name_size=48):
    descs = [("seqcount", 1, 0, 1), ("writer_pid", 1, 0, 1), ("heartbeat_ns", 1 | 2 << 4, -9, 1)] + stats
    desc_off = 24 + name_size
    data_off = (desc_off + len(descs) * (16 + name_size) + 7) & ~7
    out = u32(0) + u32(name_size) + u32(len(descs)) + u32(24) + u32(desc_off) + u32(data_off)
    out += b"virtio-blk fuzz".ljust(name_size, b"\0")
    offset = 0
    for name, flags, exponent, size in descs:
        out += u32(flags) + struct.pack("<hH", exponent, size) + u32(offset) + u32(0) + name.encode().ljust(name_size, b"\0")
        offset += size * 8
    out = out.ljust(data_off, b"\0")
    values = [2, 0, 0] + list(range(1, offset // 8 - 2))  # even seqcount, no writer pid
    return out + b"".join(u64(v) for v in values)

seed("fuzz-stats-region", "region-counters", stats_region([("requests", 0, 0, 1), ("bytes", 1 << 4, 0, 1)]))
seed("fuzz-stats-region", "region-histogram", stats_region([("latency_ns", 4 | 2 << 4 | 1 << 8, -9, 8)], name_size=16))
seed("fuzz-stats-region", "stat-entries", b"".join(u16(t) + u64(v) for t, v in [(0, 4096), (4, 1 << 30), (5, 1 << 32)]))

# --- fuzz-vfio-user: [mode] + bytes. Mode 0 wire, 1 requests to the server, 2 client against a script.
def msg(mid, cmd, payload=b"", flags=0, error=0):
    return u16(mid) + u16(cmd) + u32(16 + len(payload)) + u32(flags) + u32(error) + payload

def version(major, minor, json):
    return u16(major) + u16(minor) + json.encode() + b"\0"

def region_info(index, size, flags=3):
    return u32(32) + u32(flags) + u32(index) + u32(0) + u64(size) + u64(0)

seed("fuzz-vfio-user", "wire-version", [0] + list(msg(1, 1, version(0, 1, '{"capabilities":{}}'))))
seed("fuzz-vfio-user", "wire-error-reply", [0] + list(msg(7, 9, flags=0x21, error=22)))
requests = (msg(1, 1, version(0, 1, "{}")) + msg(2, 4, u32(16) + bytes(12)) + msg(3, 5, region_info(7, 0))
            + msg(4, 5, region_info(0, 0)) + msg(5, 9, u64(0) + u32(7) + u32(4))
            + msg(6, 10, u64(8) + u32(0) + u32(4) + u32(0xDEADBEEF)) + msg(7, 7, u32(16) + u32(0) + u32(2) + u32(0))
            + msg(8, 8, u32(20) + u32(0x21) + u32(2) + u32(0) + u32(0)) + msg(9, 3, u32(24) + u32(0) + u64(0) + u64(0))
            + msg(10, 13) + msg(11, 9, u64(0x3C) + u32(7) + u32(2), flags=0x10))
seed("fuzz-vfio-user", "server-session", [1] + list(requests))

def reply(payload):  # script step: ctl 0 (honest reply), u8 length, payload
    return [0, len(payload)] + list(payload)

sizes = {0: 64, 1: 32, 7: 256}
script = reply(version(0, 1, "{}")) + reply(u32(16) + u32(3) + u32(9) + u32(5))
for i in [0, 1, 2, 3, 4, 5, 7]:
    script += reply(region_info(i, sizes.get(i, 0), flags=3 if i in sizes else 0))
script += reply(b"")                                                        # DMA_MAP
ops = [0, 0, 2, 0] + [2, 8, 3, 0] + [4, 0, 0, 1] + [5, 0, 0, 0]             # config read, BAR0 read 8, MSI-X on, off
script += reply(u64(0) + u32(7) + u32(4) + u32(0x1AF4))                     # REGION_READ config
script += [0x40] + list(u16(0x100) + u16(16) + u16(99))                     # server's own DMA_READ first
script += reply(u64(8) + u32(0) + u32(8) + u64(0x1122334455667788))         # REGION_READ BAR0
script += reply(b"") + reply(b"")                                           # SET_IRQS on, off
seed("fuzz-vfio-user", "client-session", [2, len(ops)] + ops + script)

# --- fuzz-vhost-user: [mode] + bytes. Mode 0 a payload; mode 1 u16 image length, image, messages.
def vmsg(req, payload=b"", flags=0x9):  # NEED_REPLY on every request
    return u32(req) + u32(flags) + u32(len(payload)) + payload

seed("fuzz-vhost-user", "payload-addr", [0] + list(u32(0) + u32(0) + u64(0x1000) + u64(0x3000) + u64(0x2000) + u64(0)))
seed("fuzz-vhost-user", "payload-table", [0] + list(u32(1) + u32(0) + u64(0x40000000) + u64(1 << 20) + u64(0x10000000) + u64(0)))
seed("fuzz-vhost-user", "payload-config", [0] + list(u32(0) + u32(4) + u32(0) + bytes(4)))
# Memory (guest-physical 0x40000000 = user 0x10000000): a split ring of 64 at 0, avail at 0x400,
# used at 0x1000; one read request (header 0x2000, 512 bytes at 0x3000, status 0x4000).
def desc(addr, length, flags, nxt):
    return u64(addr) + u32(length) + u16(flags) + u16(nxt)
G, U = 0x40000000, 0x10000000
image = bytearray(0x2010)
image[0:48] = desc(G + 0x2000, 16, 1, 1) + desc(G + 0x3000, 512, 3, 2) + desc(G + 0x4000, 1, 2, 0)
image[0x400:0x406] = u16(0) + u16(1) + u16(0)
image[0x2000:0x2010] = u32(0) + u32(0) + u64(0)
session = (vmsg(1, flags=1) + vmsg(16, u64(0x209), flags=1) + vmsg(3) + vmsg(5, u32(1) + u32(0) + u64(G) + u64(1 << 20) + u64(U) + u64(0))
           + vmsg(2, u64(1 << 32 | 1 << 30)) + vmsg(8, u32(0) + u32(64)) + vmsg(10, u32(0) + u32(0))
           + vmsg(9, u32(0) + u32(0) + u64(U) + u64(U + 0x1000) + u64(U + 0x400) + u64(0))
           + vmsg(12, u64(0)) + vmsg(13, u64(0)) + vmsg(18, u32(0) + u32(1))
           + vmsg(24, u32(0) + u32(60) + u32(0) + bytes(60), flags=1) + vmsg(11, u32(0) + u32(0), flags=1))
seed("fuzz-vhost-user", "backend-session", [1] + list(u16(len(image))) + list(image) + list(session))
print("seeds written under", ROOT)
