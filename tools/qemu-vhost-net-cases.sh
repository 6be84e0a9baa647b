# The cases tools/qemu-test runs inside its vhost-net guest (sourced into /tmp/ctl/guest.sh after
# MODE=vhost-net and BIN=...). Two virtio-net-pci NICs (00:04.0, 00:05.0) whose backends are the
# two ends of this project's soft:net,backend=pair on the host; the guest kernel's virtio_net drives
# both. One NIC moves into a network namespace, so a ping crosses our device instead of the
# kernel's loopback. The run_case machinery comes from tools/qemu-guest-lib.sh.
nic_of() { ls /sys/bus/pci/devices/$1/virtio*/net/ 2>/dev/null | head -1; }
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
modprobe virtio_net 2>/dev/null
for _ in $(seq 50); do [ -n "$(nic_of 0000:00:05.0)" ] && break; sleep 0.1; done

netns_ping() {
  a=$(nic_of 0000:00:04.0); b=$(nic_of 0000:00:05.0)
  [ -n "$a" ] && [ -n "$b" ] || { echo "virtio_net did not take both NICs: '$a' '$b'"; return 1; }
  ip netns add peer && ip link set "$b" netns peer || return 1
  ip netns exec peer ip addr add 169.254.3.2/24 dev "$b" && ip netns exec peer ip link set "$b" up || return 1
  ip netns exec peer ip link set lo up
  ip addr add 169.254.3.1/24 dev "$a" && ip link set "$a" up || return 1
  busybox ping -c 20 -i 0.2 -W 10 169.254.3.2 > $CTL/ping.out 2>&1; rc=$?
  cat $CTL/ping.out; ip -s link show dev "$a"; ip netns exec peer ip -s link show dev "$b"
  [ $rc -eq 0 ] && grep -q '20 packets transmitted, 20 packets received' $CTL/ping.out || { echo "not 20 replies"; return 1; }
  echo "detail: busybox ping -c 20 from $a (169.254.3.1) to $b in netns peer (169.254.3.2): 20 replies; $(tail -1 $CTL/ping.out)"
}
run_case netns-ping netns_ping
# A burst the other way: the namespace floods, the host side counts what arrived (busybox ping -f is not there: -A).
flood() {
  a=$(nic_of 0000:00:04.0)
  before=$(cat /sys/class/net/$a/statistics/rx_packets)
  ip netns exec peer busybox ping -c 500 -A -W 10 169.254.3.1 > $CTL/flood.out 2>&1; rc=$?
  after=$(cat /sys/class/net/$a/statistics/rx_packets)
  cat $CTL/flood.out
  [ $rc -eq 0 ] && grep -q '500 packets transmitted, 500 packets received' $CTL/flood.out || { echo "not 500 replies"; return 1; }
  echo "detail: ping -A -c 500 from the namespace: 500 replies; $a RX packets +$((after - before))"
}
run_case ping-adaptive-500 flood
exit 0
