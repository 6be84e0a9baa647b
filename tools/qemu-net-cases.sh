# The virtio-net cases tools/qemu-test runs inside its net guests (written into /tmp/ctl/guest.sh
# after MODE=net-viommu|net-noiommu and BIN=<swift bin path>; the run_case machinery comes from
# tools/qemu-guest-lib.sh). Two loops of QEMU 7.2 virtio-net-pci
# NICs, each pair on its own private hub:
#   00:04.0 (ours, vfio-pci, split)  <-> 00:05.0 (the guest kernel's virtio_net, 169.254.1.1/24)
#   00:06.0 (ours, vfio-pci, packed) <-> 00:07.0 (the guest kernel's virtio_net, split, 169.254.2.1/24)
# Our side answers for 169.254.1.2 and 169.254.2.2 with `virtioctl net fwd --mode icmpecho`.
NI=""
case $MODE in *noiommu) NI=--noiommu;; esac

# No IPv6 on the kernel's NICs: its neighbour discovery would only add noise to the counters.
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
modprobe virtio_net 2>/dev/null
kernel_nic() { ls /sys/bus/pci/devices/$1/virtio*/net/ 2>/dev/null | head -1; }
k_mac() { cat /sys/class/net/$1/address; }
rx_packets() {  # what `ip -s link` shows as the NIC's RX packets
  ip -j -s link show dev "$1" | $PY -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'
}
setup_case() {
  for a in 0000:00:04.0 0000:00:06.0; do $V bind $NI $a > /dev/null || return 1; done
  K1=$(kernel_nic 0000:00:05.0); K2=$(kernel_nic 0000:00:07.0)
  [ -n "$K1" ] && [ -n "$K2" ] || { echo "virtio_net did not take 00:05.0/00:07.0: '$K1' '$K2'"; return 1; }
  ip addr add 169.254.1.1/24 dev $K1 && ip link set $K1 up || return 1
  ip addr add 169.254.2.1/24 dev $K2 && ip link set $K2 up || return 1
  echo "K1=$K1 K2=$K2" > $CTL/nics
  echo "detail: 00:04.0 and 00:06.0 on $(driver_of 0000:00:04.0); the kernel's $K1 (169.254.1.1) and $K2 (169.254.2.1) up"
}
run_case net-setup setup_case
. $CTL/nics 2>/dev/null || { echo "FAIL $MODE/net-nics 0 no kernel NICs" >> $CTL/results; exit 0; }

net_info() {  # net_info ADDR LAYOUT: MAC from config, link up, the layout asked for, control queue
  $V net info $NI "$1" -o json > $CTL/netinfo.json || { cat $CTL/netinfo.json; return 1; }
  $PY - $CTL/netinfo.json "$1" "$2" "$MODE" <<'EOF'
import json, sys
path, addr, layout, mode = sys.argv[1:]
d = json.load(open(path))
neg = {f["name"] for f in d["negotiated"]}
mac = "52:54:00:12:35:0%d" % (0 if addr.endswith("04.0") else 2)
assert d["mac"] == mac, (d["mac"], mac)
assert d["link"] == "up", d
assert ("VIRTIO_F_RING_PACKED" in neg) == (layout == "packed"), sorted(neg)
assert ("VIRTIO_F_ACCESS_PLATFORM" in neg) == (mode == "net-viommu"), sorted(neg)
assert d["control_queue"] and d["mergeable_buffers"], d
assert all(q["layout"] == layout for q in d["queues"]), d["queues"]
print("detail: %s, MAC %s, link %s, MTU %d, %d pair(s), negotiated %s" % (layout, d["mac"], d["link"], d["mtu"],
      d["queue_pairs"], " ".join(sorted(n.replace("VIRTIO_F_", "").replace("VIRTIO_NET_F_", "net:") for n in neg))))
EOF
}
run_case net-info-split net_info 0000:00:04.0 split
run_case net-info-packed net_info 0000:00:06.0 packed

# ping_case ADDR IP IRQ: our icmpecho on ADDR answers for IP; the kernel's busybox ping -c 20 gets 20 replies.
ping_case() {
  a=$1 ip=$2 irq=$3
  $V net fwd $NI "$a" --mode icmpecho --ip "$ip" --interrupts "$irq" --duration 240 -o json > $CTL/fwd.json 2> $CTL/fwd.err &
  fwd=$!
  # Until the driver is up, the kernel's ARP requests go unanswered: wait for a first reply.
  ok=0
  for _ in $(seq 40); do
    busybox ping -c 1 -W 1 "$ip" > /dev/null 2>&1 && { ok=1; break; }
    kill -0 $fwd 2>/dev/null || break
  done
  if [ $ok = 1 ]; then busybox ping -c 20 -i 0.2 -W 5 "$ip" > $CTL/ping.out 2>&1; else echo "no first reply" > $CTL/ping.out; fi
  kill -INT $fwd 2>/dev/null; wait $fwd; rc=$?
  cat $CTL/ping.out $CTL/fwd.err $CTL/fwd.json
  [ $rc -eq 0 ] || { echo "net fwd exited $rc"; return 1; }
  grep -q '20 packets transmitted, 20 packets received' $CTL/ping.out || { echo "not 20 replies"; return 1; }
  $PY - $CTL/fwd.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
assert t["echo_replies"] >= 20, t  # ARP: only while the kernel's neighbour entry is not fresh
assert t["rx"]["errors"] == 0 and t["tx"]["drops"] == 0, t
print("detail: busybox ping -c 20: 20 replies; ours: %d echo + %d ARP replies, rx %d frames, %d buffers posted" % (
      t["echo_replies"], t["arp_replies"], t["rx"]["packets"], t["rx"]["refills"]))
EOF
}
run_case ping-split-poll ping_case 0000:00:04.0 169.254.1.2 poll
run_case ping-split-msix ping_case 0000:00:04.0 169.254.1.2 msix
run_case ping-packed-poll ping_case 0000:00:06.0 169.254.2.2 poll
run_case ping-packed-msix ping_case 0000:00:06.0 169.254.2.2 msix

# txonly_case ADDR NIC IP IRQ: N frames from our txonly are N more RX packets on the kernel's NIC.
txonly_case() {
  a=$1 nic=$2 ip=$3 irq=$4 n=3000
  before=$(rx_packets $nic)
  $V net fwd $NI "$a" --mode txonly --frames $n --size 128 --eth-peer "$(k_mac $nic)" --tx-ip "$ip,${ip%.*}.1" \
    --interrupts "$irq" --duration 120 --quiet -o json > $CTL/tx.json 2> $CTL/tx.err || { cat $CTL/tx.json $CTL/tx.err; return 1; }
  sleep 1  # the kernel's NAPI may still be taking the last burst
  after=$(rx_packets $nic)
  cat $CTL/tx.json $CTL/tx.err; ip -s link show dev $nic
  sent=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["tx"]["packets"])' $CTL/tx.json)
  [ "$sent" = $n ] || { echo "sent $sent, asked $n"; return 1; }
  [ $((after - before)) -eq $n ] || { echo "kernel $nic RX grew by $((after - before)), we sent $n"; return 1; }
  stall=$(sed -n 's/.*back \([0-9]*\) time(s).*/; the full ring needed \1 stall notification(s)/p' $CTL/tx.err)
  echo "detail: txonly $n x 128 B: 'ip -s link' on $nic RX packets $before -> $after (+$((after - before)))$stall"
}
run_case txonly-split-poll txonly_case 0000:00:04.0 $K1 169.254.1.2 poll
run_case txonly-packed-msix txonly_case 0000:00:06.0 $K2 169.254.2.2 msix

# The conformance checker on QEMU's virtio-net: negotiation, config, control acks, frames across the loop.
net_check() {  # net_check ADDR PEER-IP OUR-IP: the kernel's NIC must answer the check's ARP requests
  $V check $NI "$1" --net-peer "$2" --net-ip "$3" > $CTL/check.out 2>&1; rc=$?
  cat $CTL/check.out
  [ $rc -eq 0 ] && grep -q '^result: ' $CTL/check.out || { echo "check exit $rc"; return 1; }
  grep -q 'ARP replies from the peer' $CTL/check.out || { echo "no frame step ran"; return 1; }
  echo "detail: $(sed -n 's/^result: //p' $CTL/check.out); $(grep -m1 'net frames' $CTL/check.out | sed 's/.*received/received/' | cut -c1-80)"
}
run_case check-net-split net_check 0000:00:04.0 169.254.1.1 169.254.1.2
run_case check-net-packed net_check 0000:00:06.0 169.254.2.1 169.254.2.2
exit 0
