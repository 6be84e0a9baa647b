#!/usr/bin/env python3
"""Host side of the QEMU balloon case of tools/qemu-test.

Waits for the guest to attach our balloon driver (it touches RUN/balloon-ready), turns on
QEMU's statistics polling through QMP (guest-stats-polling-interval), reads QEMU's own
guest-stats back and checks them against the guest's /proc/meminfo samples (RUN/meminfo.txt).
Writes "PASS details" or "FAIL why" to RUN/balloon-verdict.

Usage: qemu-balloon-qmp.py RUN_DIR
"""
import json
import os
import socket
import sys
import time

run = sys.argv[1]
sock_path = os.path.join(run, "qmp.sock")
verdict_path = os.path.join(run, "balloon-verdict")


def verdict(text):
    with open(verdict_path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.rename(verdict_path + ".tmp", verdict_path)
    print(text, flush=True)


def wait_for(path, seconds):
    end = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > end:
            return False
        time.sleep(0.2)
    return True


if not wait_for(sock_path, 120):
    verdict("FAIL QEMU never opened its QMP socket")
    sys.exit(1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock_path)
f = s.makefile("rw")
f.readline()  # greeting


def qmp(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if "return" in msg:
            return msg["return"]
        if "error" in msg:
            raise RuntimeError(f"{name}: {msg['error']}")


qmp("qmp_capabilities")
if not wait_for(os.path.join(run, "balloon-ready"), 1200):
    verdict("FAIL the guest never reported the balloon driver attached")
    sys.exit(1)
path = "/machine/peripheral/balloon0"
qmp("qom-set", path=path, property="guest-stats-polling-interval", value=1)
print("polling interval set", flush=True)

stats, last = {}, 0
end = time.time() + 60
while time.time() < end:
    r = qmp("qom-get", path=path, property="guest-stats")
    stats, last = r.get("stats", {}), r.get("last-update", 0)
    if last > 0 and stats.get("stat-total-memory", -1) > 0:
        time.sleep(2)  # a few more rounds, so the driver answered repeatedly
        r = qmp("qom-get", path=path, property="guest-stats")
        stats, last = r["stats"], r["last-update"]
        break
    time.sleep(0.5)
print("guest-stats", json.dumps({"stats": stats, "last-update": last}), flush=True)
if last <= 0:
    verdict("FAIL QEMU's guest-stats never updated: our driver did not answer the statistics queue")
    sys.exit(1)

samples = []
with open(os.path.join(run, "meminfo.txt")) as m:
    for line in m:
        words = line.split()
        d = {words[i].rstrip(":"): int(words[i + 1]) * 1024 for i in range(0, len(words) - 2, 3)}
        if "MemTotal" in d:
            samples.append(d)
if not samples:
    verdict("FAIL no /proc/meminfo samples from the guest")
    sys.exit(1)
problems = []
total = samples[0]["MemTotal"]
if stats.get("stat-total-memory") != total:
    problems.append(f"stat-total-memory {stats.get('stat-total-memory')} != guest MemTotal {total}")
for key, field in (("stat-free-memory", "MemFree"), ("stat-available-memory", "MemAvailable")):
    lo = min(x[field] for x in samples) * 0.9
    hi = max(x[field] for x in samples) * 1.1
    if not lo <= stats.get(key, -1) <= hi:
        problems.append(f"{key} {stats.get(key)} outside the guest's {field} range {int(lo)}..{int(hi)}")
for key in ("stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults", "stat-disk-caches"):
    if stats.get(key, -1) < 0:
        problems.append(f"{key} missing")
if problems:
    verdict("FAIL " + "; ".join(problems))
    sys.exit(1)
verdict(f"PASS QMP guest-stats: total {stats['stat-total-memory']} B == guest MemTotal, free {stats['stat-free-memory']} B, "
        f"available {stats['stat-available-memory']} B within the guest's samples, minor faults {stats['stat-minor-faults']}")
