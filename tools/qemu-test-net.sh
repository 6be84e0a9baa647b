# The virtio-net guests of tools/qemu-test (sourced by it; uses its guest_qemu_args, record,
# collect_results, build_noiommu_vfio, $BIN, $OUT, $ROOT, $KEEP).

# boot_net viommu|noiommu: QEMU 7.2 virtio-net-pci NICs in two loops (each pair on a private
# hub): 00:04.0 (split) and 00:06.0 (packed=on) are ours through vfio-pci; 00:05.0 and 00:07.0
# (split) stay with the guest kernel's virtio_net. Cases: tools/qemu-net-cases.sh.
boot_net() {
  local mode=$1 run=$OUT/run-net-$1 props preload="" huge=0 hub k n slot packed
  rm -rf "$run"; mkdir -p "$run"
  if [ "$mode" = noiommu ]; then
    preload=$(build_noiommu_vfio) || { record FAIL "net-$mode/build-vfio-noiommu" 0 "could not rebuild vfio.ko (see above)"; return; }
    huge=96
  fi
  { echo "PROJECT='$ROOT'"; echo "PRELOAD='$preload'"; echo "HUGEPAGES=$huge"; } > "$run/env"
  { echo "MODE=net-$mode"; echo "BIN='$BIN'"; echo "DEVICES=''"
    cat "$ROOT/tools/qemu-guest-lib.sh" "$ROOT/tools/qemu-net-cases.sh"; } > "$run/guest.sh"
  local q=()
  guest_qemu_args "$run" "$mode"
  for hub in 0 1; do
    for k in 0 1; do
      # Only our NIC on hub 1 is packed: the kernel's virtio_net stays on split rings.
      packed=""; [ $hub = 1 ] && [ $k = 0 ] && packed=",packed=on"
      n=$((2 * hub + k)); slot=$(printf '%x' $((4 + n)))
      q+=(-netdev "hubport,id=n$n,hubid=$hub"
          -device "virtio-net-pci,netdev=n$n,mac=52:54:00:12:35:0$n,romfile=,$props,addr=0x$slot$packed")
    done
  done
  say "booting the net-$mode guest (2 loops of 2 virtio-net-pci: ours on 04.0/06.0, the kernel's on 05.0/07.0)"
  local t0=$SECONDS
  timeout -k 5 1200 "${q[@]}" < /dev/null > "$run/qemu.log" 2>&1 || true
  finish_guest "net-$mode" "$run" $t0
}

# boot_vhost_net: the guest kernel's virtio_net drives this project's soft:net. Two NICs whose
# netdevs are vhost-user sockets served by one `virtioctl softdev serve` (soft:net,backend=pair:
# what one sends, the other receives); the guest moves one NIC into a network namespace and
# pings across. Cases: tools/qemu-vhost-net-cases.sh. The server is ended by PID.
boot_vhost_net() {
  local mode=vhost-net run=$OUT/run-vhost-net sock q=() pid i
  rm -rf "$run"; mkdir -p "$run"
  sock=$(mktemp -d /tmp/qemu-test-vhost-net.XXXXXX)
  { echo "PROJECT='$ROOT'"; echo "PRELOAD=''"; echo "HUGEPAGES=0"; } > "$run/env"
  { echo "MODE=$mode"; echo "BIN='$BIN'"; echo "DEVICES=''"
    cat "$ROOT/tools/qemu-guest-lib.sh" "$ROOT/tools/qemu-vhost-net-cases.sh"; } > "$run/guest.sh"
  guest_qemu_args "$run" none ",memory-backend=mem0"
  q+=(-object memory-backend-memfd,id=mem0,size=1G,share=on)
  "$BIN/virtioctl" softdev serve -v --vhost-user "$sock/a.sock" --vhost-user "$sock/b.sock" \
    "soft:net,backend=pair,mac=52:54:00:12:36:00" > "$run/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$sock/a.sock" ] && [ -S "$sock/b.sock" ] && break; sleep 0.1; done
  for i in 0 1; do
    # vectors=0: QEMU 7.2 under TCG segfaults in vhost_net_start with MSI-X (../shared/qemu/README.md).
    q+=(-chardev "socket,id=vu$i,path=$sock/$([ $i = 0 ] && echo a || echo b).sock" -netdev "vhost-user,id=vh$i,chardev=vu$i"
        -device "virtio-net-pci,netdev=vh$i,mac=52:54:00:12:36:0$i,romfile=,disable-legacy=on,vectors=0,addr=0x$((4 + i))")
  done
  say "booting the vhost-net guest (2 virtio-net-pci on softdev serve --vhost-user soft:net,backend=pair)"
  local t0=$SECONDS
  timeout -k 5 600 "${q[@]}" < /dev/null > "$run/qemu.log" 2>&1 || true
  sleep 0.5  # QEMU's exit closes both sockets: let the server report each frontend
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$sock"
  [ -f "$run/rc" ] && for i in 1 2; do
    # One frontend per socket; each must leave with "no driver conformance violations".
    if grep -q 'driver violation\|refused' "$run/serve.log"; then
      record FAIL "$mode/backend-conformance-$i" 0 "$(grep -m1 'driver violation\|refused' "$run/serve.log" | cut -c1-150)"
      sed 's/^/    | /' "$run/serve.log" | tail -20 >&2
      break
    fi
    n=$(grep -c 'frontend 1: no driver conformance violations' "$run/serve.log" || true)
    if [ "$n" -ge "$i" ]; then
      record PASS "$mode/backend-conformance-$i" 0 "QEMU + Linux virtio_net on socket $i: no violation; $(grep 'frontend 1: ' "$run/serve.log" | grep -v conformance | sed -n "${i}p" | cut -c1-110)"
    else
      record FAIL "$mode/backend-conformance-$i" 0 "socket $i: no complete frontend session seen: $(tail -1 "$run/serve.log" | cut -c1-150)"
      sed 's/^/    | /' "$run/serve.log" | tail -20 >&2
    fi
  done
  finish_guest "$mode" "$run" $t0
}
