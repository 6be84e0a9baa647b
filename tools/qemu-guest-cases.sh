# The virtio-blk (and balloon) cases tools/qemu-test runs inside its viommu and noiommu guests,
# after tools/qemu-guest-lib.sh's helpers.
list_check() {  # list_check DRIVER INDEX...: list -o json shows those functions on DRIVER
  want=$1; shift
  $V list -o json > $CTL/list.json || return 1
  cat $CTL/list.json
  for i in "$@"; do
    $PY - $CTL/list.json "$(addr $i)" "$want" "$IOMMU" <<'EOF' || return 1
import json, sys
path, addr, want, mode = sys.argv[1:]
d = {x["address"]: x for x in json.load(open(path))}
x = d.get(addr)
assert x, f"{addr} not listed"
assert x["type"] == "blk" and x["vendor_id"] == 0x1af4, x
assert x.get("driver") == want, f"{addr}: driver {x.get('driver')}, want {want}"
assert x.get("name"), f"{addr}: no pci.ids name"
if mode == "viommu": assert x.get("iommu_group"), f"{addr}: no IOMMU group"
EOF
  done
  $PY - $CTL/list.json "$#" "$want" <<'EOF'
import json, sys
fns = [x for x in json.load(open(sys.argv[1])) if x["type"] == "blk"]
print("detail: %s function(s) on %s; e.g. %s" % (sys.argv[2], sys.argv[3],
      "; ".join("%s %s %s group %s '%s'" % (x["address"], x["type"], x.get("driver"), x.get("iommu_group"), x.get("name")) for x in fns[:1])))
EOF
}

info_check() {  # info_check INDEX: negotiated features, queue count and size match the QEMU properties
  i=$1
  $V info $NI "$(addr $i)" -o json > $CTL/info.json || { cat $CTL/info.json; return 1; }
  $PY - $CTL/info.json "$IOMMU" "$(prop $i packed)" "$(prop $i num-queues)" "$(prop $i queue-size)" <<'EOF'
import json, sys
path, mode, packed, nq, qs = sys.argv[1:]
d = json.load(open(path))
neg = {f["name"] for f in d["negotiated"]}
off = {f["name"] for f in d["offered"]}
def need(name, cond=True):
    assert (name in neg) == cond, f"{name} {'not ' if cond else ''}negotiated: {sorted(neg)}"
need("VIRTIO_F_VERSION_1")
need("VIRTIO_F_ACCESS_PLATFORM", mode == "viommu")
need("VIRTIO_F_RING_RESET")
need("VIRTIO_F_RING_PACKED", packed == "on")
assert len(d["queues"]) == int(nq), d["queues"]
assert all(q["size"] == int(qs) and q["layout"] == ("packed" if packed == "on" else "split") for q in d["queues"]), d["queues"]
assert "VIRTIO_F_IN_ORDER" not in off  # QEMU 7.2 never offers it
print("detail: %s q%s x%s, negotiated %s" % ("packed" if packed == "on" else "split", qs, nq,
      " ".join(sorted(n.replace("VIRTIO_F_", "").replace("VIRTIO_BLK_F_", "blk:") for n in neg))))
EOF
}

verify() {  # verify INDEX [ENV...]: the whole-image test; its summary line becomes the detail
  i=$1; shift
  swift_test wholeImageWrittenFlushedAndReadBackOverEveryQueue VIRTIO_TEST_PCI="$(addr $i)" \
    VIRTIO_TEST_NOIOMMU=$([ "$IOMMU" = noiommu ] && echo 1 || echo 0) "$@" || return 1
  echo "detail: $(sed -n 's/^real-device: //p' $CTL/t.out | sed 's/, negotiated.*//')"
}

verify_chains() {
  verify "$@" VIRTIO_TEST_FEATURE_OFF=VIRTIO_F_INDIRECT_DESC || return 1
  grep "^real-device:" $CTL/t.out | grep -q INDIRECT_DESC && { echo "indirect descriptors were negotiated"; return 1; }
  echo "detail: $(sed -n 's/^real-device: //p' $CTL/t.out | sed 's/, negotiated.*//'), no indirect: 3-descriptor chains wrap the ring"
}

verify_msix() {
  verify "$@" VIRTIO_TEST_INTERRUPTS=msix || return 1
  grep -q "real-device:.* [1-9][0-9]* interrupts" $CTL/t.out || { echo "no interrupt was taken"; return 1; }
}

host_pattern_test() {
  swift_test hostWrittenPatternReadsBackExactly VIRTIO_TEST_PCI="$(addr 0)" VIRTIO_TEST_PATTERN=$CTL/pattern.bin \
    VIRTIO_TEST_NOIOMMU=$([ "$IOMMU" = noiommu ] && echo 1 || echo 0) || return 1
  echo "detail: 64 MiB written by the host before boot read back identical (test binary, 64 KiB requests, every queue)"
}

host_pattern_cli() {
  $V blk read "$(addr 0)" --lba 0 --blocks 131072 --out /tmp/image --dma 160M || return 1
  cmp /tmp/image $CTL/pattern.bin || return 1
  echo "detail: virtioctl blk read of all 131072 blocks == the host's file"
}

msix_cli() {
  a=$(addr 0)
  $V info "$a" --interrupts msix -o json > $CTL/info.json || return 1
  $PY -c 'import json,sys; q=json.load(sys.stdin)["queues"]; assert [x.get("vector") for x in q] == [1,2], q' < $CTL/info.json || return 1
  head -c 1M /dev/urandom > /tmp/msix.bin
  $V blk write "$a" --interrupts msix --lba 4096 --in /tmp/msix.bin || return 1
  $V blk read "$a" --interrupts msix --lba 4096 --blocks 2048 --out /tmp/msix.back || return 1
  cmp /tmp/msix.bin /tmp/msix.back || return 1
  echo "detail: queue vectors [1, 2]; 1 MiB written and read back through MSI-X completions"
}

bench_cli() {
  $V blk bench "$(addr $1)" --duration 1 --depth 8 --pattern randrw --quiet -o json > $CTL/bench.json || { cat $CTL/bench.json; return 1; }
  cat $CTL/bench.json
  $PY - $CTL/bench.json <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))
assert b["requests"] > 0 and b["errors"] == 0, b
print("detail: %d requests over %d queue(s), 0 errors, %s (TCG: not a speed figure)" % (b["requests"], b["queues"], b["layout"]))
EOF
}

flush_cli() { $V blk flush $NI "$(addr 0)" && echo "detail: VIRTIO_BLK_T_FLUSH completed OK"; }

memlock_error() {  # the nodes the driver opens, given to nobody: the group, and iommufd with the cdev where they exist
  g=$(basename "$(readlink /sys/bus/pci/devices/$(addr 0)/iommu_group)")
  nodes="/dev/vfio/$g $(ls -d /dev/iommu /dev/vfio/devices/$(ls /sys/bus/pci/devices/$(addr 0)/vfio-dev/ 2>/dev/null) 2>/dev/null)"
  chown 65534 $nodes
  expect_fail "RLIMIT_MEMLOCK is 64 KiB" as_nobody prlimit --memlock=65536:65536 $V info "$(addr 0)"
  rc=$?
  chown 0 $nodes
  return $rc
}

guest_write() {
  $V blk write "$(addr $LAST)" --lba 0 --in $CTL/guestwrite.bin --dma 160M && $V blk flush "$(addr $LAST)" &&
    echo "detail: 64 MiB from a host file written through the driver (the host compares the image after power-off)"
}

round_trip() {
  a=$(addr $LAST)
  [ "$(driver_of $a)" = virtio-pci ] || { echo "$a starts on $(driver_of $a)"; return 1; }
  $V bind $NI "$a" || return 1
  [ "$(driver_of $a)" = vfio-pci ] || return 1
  $V bind $NI "$a" | grep -q "already bound" || return 1
  $V info $NI "$a" > /dev/null || return 1
  $V unbind "$a" || return 1
  [ "$(driver_of $a)" = virtio-pci ] || { echo "after unbind: $(driver_of $a)"; return 1; }
  [ "$(cat /sys/bus/pci/devices/$a/driver_override)" = "(null)" ] || { echo "driver_override left set"; return 1; }
  list_check virtio-pci $LAST > /dev/null || return 1
  echo "detail: virtio-pci -> vfio-pci (bind, bind again: already bound, info) -> virtio-pci (unbind, override cleared)"
}

balloon_case() {  # our balloon driver answers QEMU's statistics queue; the host checks QMP guest-stats
  b=$BALLOON
  $V bind $NI "$b" > /dev/null || return 1
  rm -f /tmp/balloon.stats
  $V attach "$b" $NI --stats-file /tmp/balloon.stats > $CTL/attach.log 2>&1 &
  apid=$!
  for _ in $(seq 200); do [ -e /tmp/balloon.stats ] && break; sleep 0.1; done
  [ -e /tmp/balloon.stats ] || { cat $CTL/attach.log; kill $apid; return 1; }
  : > $CTL/meminfo.txt
  touch $CTL/balloon-ready
  # /proc/meminfo while the host reads QEMU's guest-stats (at most 120 s)
  for _ in $(seq 240); do
    grep -E '^(MemTotal|MemFree|MemAvailable):' /proc/meminfo | tr '\n' ' ' >> $CTL/meminfo.txt; echo >> $CTL/meminfo.txt
    [ -e $CTL/balloon-verdict ] && break
    sleep 0.5
  done
  $V stats /tmp/balloon.stats -o json > $CTL/bstats.json
  kill -TERM $apid; wait $apid; arc=$?
  cat $CTL/attach.log
  [ $arc -eq 0 ] || { echo "attach exited $arc"; return 1; }
  [ -e /tmp/balloon.stats ] && { echo "the region was left behind"; return 1; }
  $V unbind "$b" > /dev/null || return 1
  cat $CTL/balloon-verdict 2>/dev/null || { echo "no verdict from the host"; return 1; }
  $PY - $CTL/bstats.json "$(awk '/^MemTotal:/ {print $2 * 1024}' /proc/meminfo)" <<'EOF' || return 1
import json, sys
d = {s["name"]: s.get("value") for s in json.load(open(sys.argv[1]))["stats"]}
assert d["balloon_statsq_requests"] >= 1, d
assert d["balloon_total_memory"] == int(sys.argv[2]), (d["balloon_total_memory"], sys.argv[2])
print("detail: %d statistics request(s) answered; region total_memory == MemTotal; host: %s" % (
      d["balloon_statsq_requests"], open("/tmp/ctl/balloon-verdict").read().split(" ", 1)[0]))
EOF
  grep -q '^PASS' $CTL/balloon-verdict
}

# ---- the cases ------------------------------------------------------------------
ALL=$(seq 0 $((COUNT - 1)))
BOUND=$(seq 0 $((COUNT - 2)))   # the last function stays on virtio-pci for the round trip
run_case list list_check virtio-pci $ALL
# First, so the host's QMP check does not wait on the rest.
[ -n "$BALLOON" ] && run_case balloon-stats balloon_case
run_case error-not-bound expect_fail "not vfio-pci; run \`virtioctl bind" $V info "$(addr 0)"
run_case error-bind-not-root expect_fail "run as root" as_nobody $V bind "$(addr 0)"
if [ "$IOMMU" = noiommu ]; then
  run_case error-no-iommu-without-flag expect_fail "--noiommu" $V bind "$(addr 0)"
fi
for i in $BOUND; do run_case bind-$(addr $i) with_detail $V bind $NI "$(addr $i)"; done
run_case list-bound list_check vfio-pci $BOUND
run_case error-open-not-root expect_fail "run as root" as_nobody $V info $NI "$(addr 0)"
if [ "$IOMMU" = viommu ]; then
  run_case error-memlock memlock_error
else
  run_case error-noiommu-needs-flag expect_fail "pass --noiommu" $V info "$(addr 0)"
fi
for i in $BOUND; do run_case info-$(addr $i) info_check $i; done
regions() {
  $V info $NI "$(addr 0)" -o json > $CTL/info.json || { cat $CTL/info.json; return 1; }
  $PY - $CTL/info.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["transport"]
assert t["bar4"].endswith("mmap"), t  # the virtio registers: mapped, volatile accesses
assert all(", mapped" in t[k] for k in ("common_cfg", "notify", "isr", "device_cfg")), t
print("detail: %s; %s; dma %s" % ("; ".join("%s: %s" % (k, v) for k, v in sorted(t.items()) if k.startswith("bar")), t["vfio_iommu"], t["dma_memory"]))
EOF
}
run_case regions regions
run_case host-pattern-test host_pattern_test
[ "$IOMMU" = viommu ] && run_case host-pattern-cli host_pattern_cli
for i in $BOUND; do
  run_case verify-poll-$(addr $i) verify $i
  if [ "$(prop $i queue-size)" = 4 ]; then
    # No indirect tables: every request is a 3-descriptor chain in a 4-entry ring.
    run_case verify-chains-$(addr $i) verify_chains $i
  fi
done
run_case verify-msix-$(addr 0) verify_msix 0
run_case verify-msix-$(addr 1) verify_msix 1
[ "$IOMMU" = viommu ] && run_case msix-cli msix_cli
ring_reset() { swift_test ringResetThenIOWorks "$@" && echo "detail: queue 0 reset through queue_reset (VIRTIO_F_RING_RESET), data written before reads back after"; }
run_case ring-reset ring_reset VIRTIO_TEST_PCI="$(addr 0)" VIRTIO_TEST_NOIOMMU=$([ "$IOMMU" = noiommu ] && echo 1 || echo 0)
run_case flush flush_cli
# QEMU 7.2 has no admin virtqueue (bit 41): the admin verb must say so, touching nothing else.
run_case admin-not-offered expect_fail "no admin virtqueue (VIRTIO_F_ADMIN_VQ, bit 41, not offered)" $V admin "$(addr 0)" list-query $NI
# The conformance checker on QEMU's virtio-blk: it must run to the end; what it finds is reported, not judged.
check_case() {
  $V check "$(addr $1)" $NI --write > $CTL/check.out 2>&1; rc=$?
  cat $CTL/check.out
  [ $rc -le 1 ] && grep -q '^result: ' $CTL/check.out || { echo "check did not complete (exit $rc)"; return 1; }
  echo "detail: exit $rc; $(sed -n 's/^result: //p' $CTL/check.out)$(sed -n 's/^  \(MUST\|SHOULD\|FAILURE\) ([0-9]* steps\?): / | \1 /p' $CTL/check.out | tr -d '\n')"
}
CHECKED=0; [ "$IOMMU" = viommu ] && CHECKED=1
run_case check-$(addr $CHECKED) check_case $CHECKED
[ "$IOMMU" = viommu ] && run_case bench-cli bench_cli 2
# Random self-checking reads and writes (over the first 1 MiB): split, then packed; nothing corrupt or lost.
soak_case() {
  $V soak "$(addr $1)" $NI --requests 2000 --blocks 256 --depth 4 --timeout 5000 > $CTL/soak.out 2>&1; rc=$?
  cat $CTL/soak.out
  [ $rc -eq 0 ] || { echo "soak exited $rc"; return 1; }
  grep -q "corrupt 0, lost 0, failed 0" $CTL/soak.out || { echo "soak lost or corrupted requests"; return 1; }
  echo "detail: $(sed -n 's/^soak .*: \([0-9][0-9]* requests\)/\1/p' $CTL/soak.out); $(sed -n 's/^  corrupt/corrupt/p' $CTL/soak.out)"
}
run_case soak-$(addr 0) soak_case 0
run_case soak-$(addr 1) soak_case 1
if [ "$IOMMU" = viommu ]; then
  run_case bind-guest-write with_detail $V bind "$(addr $LAST)"
  run_case guest-write guest_write
  run_case unbind-after-write with_detail $V unbind "$(addr $LAST)"
fi
run_case bind-unbind-round-trip round_trip
teardown() {
  swift_test teardownLeavesNoFDOrMapping VIRTIO_TEST_PCI="$(addr 0)" VIRTIO_TEST_NOIOMMU=$([ "$IOMMU" = noiommu ] && echo 1 || echo 0) &&
    echo "detail: $(sed -n 's/^real-device: teardown: //p' $CTL/t.out) (after attach, MSI-X I/O and release)"
}
run_case teardown teardown

# A function behind a PCIe root port has FLR: VFIO_DEVICE_RESET at open and close.
rootport_case() {
  a=0000:01:00.0
  $V bind "$a" || return 1
  $V info "$a" -o json > $CTL/info.json || { cat $CTL/info.json; return 1; }
  $PY - $CTL/info.json <<'EOF' || return 1
import json, sys
t = json.load(open(sys.argv[1]))["transport"]
assert "VFIO_DEVICE_RESET" in t["vfio_reset"], t
print("detail: vfio_reset: %s; %s" % (t["vfio_reset"], ", ".join("%s: %s" % (k, v) for k, v in sorted(t.items()) if k.startswith("bar"))))
EOF
  swift_test wholeImageWrittenFlushedAndReadBackOverEveryQueue VIRTIO_TEST_PCI=$a > /dev/null || return 1
  $V unbind "$a" > /dev/null
}
[ -n "$ROOTPORT" ] && run_case rootport-flr rootport_case
# iommufd and the VFIO device cdev. On the kernel built here (IOMMUFD, VFIO_DEVICE_CDEV) every case
# above went through them (--vfio auto takes the cdev): this case proves it, and that the group path
# still works on the same kernel. Debian's kernels have no /dev/iommu: --vfio iommufd must say so.
iommufd_case() {
  a=$(addr 0)
  cdev=$(ls /sys/bus/pci/devices/$a/vfio-dev/ 2>/dev/null)
  ls -l /dev/iommu /dev/vfio /dev/vfio/devices
  [ -n "$cdev" ] && [ -c /dev/vfio/devices/$cdev ] || { echo "$a has no cdev node (vfio-dev: '$cdev')"; return 1; }
  $V list -o json > $CTL/list.json || return 1
  $PY -c "import json; d={x['address']: x for x in json.load(open('$CTL/list.json'))}; assert d['$a'].get('vfio_cdev') == '$cdev', d['$a']" || return 1
  $V list | grep "^$a .* $cdev " || { $V list; echo "list shows no $cdev for $a"; return 1; }
  $V info "$a" -o json > $CTL/info.json || { cat $CTL/info.json; return 1; }
  $V info "$a" --vfio group -o json > $CTL/info-group.json || { cat $CTL/info-group.json; return 1; }
  swift_test wholeImageWrittenFlushedAndReadBackOverEveryQueue VIRTIO_TEST_PCI="$a" VIRTIO_TEST_VFIO=group > /dev/null || return 1
  $PY - $CTL/info.json $CTL/info-group.json <<'EOF' || return 1
import json, sys
auto, group = (json.load(open(p))["transport"]["vfio_iommu"] for p in sys.argv[1:])
assert auto.startswith("iommufd, cdev /dev/vfio/devices/vfio"), auto
assert group.startswith("type1, group"), group
print("detail: auto: %s; --vfio group: %s, whole-image test passed through it too" % (auto, group))
EOF
}
# The cdev path refuses what it must: the group held by another process, a function that is not virtio.
iommufd_group_busy() {
  a=$(addr 0)
  rm -f /tmp/hold.stats
  $V attach "$a" --vfio group --stats-file /tmp/hold.stats > $CTL/hold.log 2>&1 &
  hpid=$!
  for _ in $(seq 200); do [ -e /tmp/hold.stats ] && break; sleep 0.1; done
  expect_fail "is open (another process uses the group API)" $V info --vfio iommufd "$a"
  rc=$?
  kill -TERM $hpid; wait $hpid
  return $rc
}
iommufd_not_virtio() {  # pci-testdev at 00:12.0, handed to vfio-pci by hand (virtioctl bind refuses it)
  t=0000:00:12.0
  echo vfio-pci > /sys/bus/pci/devices/$t/driver_override
  echo $t > /sys/bus/pci/drivers_probe
  [ "$(driver_of $t)" = vfio-pci ] || { echo "pci-testdev did not bind to vfio-pci"; return 1; }
  ls /sys/bus/pci/devices/$t/vfio-dev/
  expect_fail "not a virtio function" $V info "$t"
  rc=$?
  echo $t > /sys/bus/pci/devices/$t/driver/unbind
  return $rc
}
if [ -e /dev/iommu ]; then
  run_case iommufd iommufd_case
  run_case error-iommufd-group-busy iommufd_group_busy
  [ -e /sys/bus/pci/devices/0000:00:12.0 ] && run_case error-iommufd-not-virtio iommufd_not_virtio
else
  run_case error-no-iommufd expect_fail "/dev/iommu does not exist" $V info --vfio iommufd $NI "$(addr 0)"
fi
exit 0
