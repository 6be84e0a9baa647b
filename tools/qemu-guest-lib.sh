# The helpers every tools/qemu-test VFIO guest script starts with (qemu-test writes them into
# /tmp/ctl/guest.sh after MODE=..., [IOMMU=...,] BIN=<swift bin path>, DEVICES='<props of 00:04.0> ...', and
# before the cases: tools/qemu-guest-cases.sh for blk, tools/qemu-net-cases.sh for net). Each case
# appends "PASS|FAIL|SKIP MODE/NAME SECONDS DETAIL" to /tmp/ctl/results; its output goes to
# /tmp/ctl/logs/MODE_NAME.log. A case's last "detail: " line is its summary.
set -u
CTL=/tmp/ctl
mkdir -p $CTL/logs
: > $CTL/results
V=$BIN/virtioctl
X=$BIN/virtio-swiftPackageTests.xctest
PY=/usr/bin/python3
# IOMMU: how the guest's devices are isolated (viommu or noiommu), whatever the guest is called
# (the iommufd guest is a viommu one on the kernel built here).
IOMMU=${IOMMU:-$MODE}
NI=""
[ "$IOMMU" = noiommu ] && NI=--noiommu
COUNT=$(echo $DEVICES | wc -w)
LAST=$((COUNT - 1))

addr() { printf '0000:00:%02x.0' $((4 + $1)); }
props() { echo $DEVICES | tr ' ' '\n' | sed -n "$(($1 + 1))p"; }
prop() { props "$1" | tr , '\n' | sed -n "s/^$2=//p"; }
now() { cut -d' ' -f1 /proc/uptime; }

# Every case is bounded: past CASE_LIMIT seconds its process tree is recorded (state, wait
# channel, kernel stack) into its log and killed by PID, and the case fails; the suite goes on.
CASE_LIMIT=${CASE_LIMIT:-300}
tree_of() { echo "$1"; for c in $(cat /proc/$1/task/*/children 2>/dev/null); do tree_of "$c"; done; }
run_case() {
  name=$1; shift
  log=$CTL/logs/${MODE}_$(echo "$name" | tr / _).log
  t0=$(now)
  ( "$@" ) > "$log" 2>&1 &
  pid=$!
  ticks=0
  while kill -0 $pid 2>/dev/null && [ $ticks -lt $((CASE_LIMIT * 5)) ]; do sleep 0.2; ticks=$((ticks + 1)); done
  if kill -0 $pid 2>/dev/null; then
    pids=$(tree_of $pid)
    { echo "timed out after $CASE_LIMIT s; the case's processes:"
      for p in $pids; do
        echo "pid $p $(cat /proc/$p/comm 2>/dev/null) wchan=$(cat /proc/$p/wchan 2>/dev/null) $(grep '^State' /proc/$p/status 2>/dev/null)"
        cat /proc/$p/stack 2>/dev/null | head -12
      done; } >> "$log"
    for p in $pids; do kill -KILL $p 2>/dev/null; done
    wait $pid 2>/dev/null
    echo "detail: timed out after $CASE_LIMIT s (process states in the log)" >> "$log"
    v=FAIL
  elif wait $pid; then v=PASS; else v=FAIL; fi
  [ $v = PASS ] && grep -q '^skip: ' "$log" && v=SKIP
  secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
  detail=$(sed -n 's/^\(detail\|skip\): //p' "$log" | tail -1 | cut -c1-150)
  echo "$v $MODE/$name $secs $detail" >> $CTL/results
}

# expect_fail TEXT CMD...: the command must fail, and say TEXT.
expect_fail() {
  text=$1; shift
  if out=$("$@" 2>&1); then echo "$out"; echo "unexpectedly succeeded"; return 1; fi
  echo "$out"
  echo "$out" | grep -qF -- "$text" || { echo "the message lacks: $text"; return 1; }
  echo "detail: exit non-zero: $(echo "$out" | grep -F -- "$text" | head -1 | cut -c1-110)"
}

# A command whose last output line is the case's detail.
with_detail() { out=$("$@" 2>&1); rc=$?; echo "$out"; echo "detail: $(echo "$out" | tail -1)"; return $rc; }

as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

# The test binary, one test, against one device; it must run (not skip) and pass.
swift_test() {
  filter=$1; shift
  env "$@" $X --testing-library swift-testing --filter "$filter" > $CTL/t.out 2>&1
  rc=$?
  cat $CTL/t.out
  [ $rc -eq 0 ] || return 1
  grep -q "Test $filter.* passed" $CTL/t.out || { echo "the test did not run"; return 1; }
}

driver_of() { d=$(readlink /sys/bus/pci/devices/$1/driver) && basename "$d" || echo none; }
