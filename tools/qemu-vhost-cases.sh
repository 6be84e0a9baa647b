# The cases tools/qemu-test runs inside its vhost guest (sourced into /tmp/ctl/guest.sh after
# MODE=vhost, BIN=..., QUEUES='<queues of 00:04.0> <of 00:05.0> ...', MD5_<i>=<md5 of the first
# 16 MiB the host wrote>). The devices are vhost-user-blk-pci functions whose backend is this
# project's software device on the host; the guest kernel's own virtio_blk drives them.
# Each case appends "PASS|FAIL MODE/NAME SECONDS DETAIL" to /tmp/ctl/results.
set -u
CTL=/tmp/ctl
mkdir -p $CTL/logs
: > $CTL/results
now() { cut -d' ' -f1 /proc/uptime; }
run_case() {
  name=$1; shift
  log=$CTL/logs/${MODE}_$(echo "$name" | tr / _).log
  t0=$(now)
  if ( "$@" ) > "$log" 2>&1; then v=PASS; else v=FAIL; fi
  secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
  detail=$(sed -n 's/^detail: //p' "$log" | tail -1 | cut -c1-150)
  echo "$v $MODE/$name $secs $detail" >> $CTL/results
}
addr() { printf '0000:00:%02x.0' $((4 + $1)); }
disk_of() { ls /sys/bus/pci/devices/$(addr $1)/virtio*/block/ 2>/dev/null | head -1; }

modprobe virtio_blk 2>/dev/null
modprobe ext4 2>/dev/null
for _ in $(seq 50); do [ -n "$(disk_of 0)" ] && break; sleep 0.1; done

# The guest reads back what the host wrote into the backend's file, and sees the queues it asked for.
pattern() {
  i=$1; want=$2; dev=$(disk_of $i)
  [ -n "$dev" ] || { echo "no block device under $(addr $i)"; ls /sys/bus/pci/devices/$(addr $i)/ ; return 1; }
  got=$(head -c 16777216 /dev/$dev | md5sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "md5 of the first 16 MiB of /dev/$dev: $got, the host wrote $want"; return 1; }
  q=$(ls /sys/block/$dev/mq | wc -l)
  echo "detail: /dev/$dev ($(cat /sys/block/$dev/size) sectors, $q queue(s), $(cat /sys/bus/pci/devices/$(addr $i)/virtio*/features | cut -c35 | sed 's/1/packed/;s/0/split/')): first 16 MiB md5 $got, as written on the host"
}

# mkfs.ext4, files written, sync, fsck -n clean, read back after a remount.
filesystem() {
  i=$1; dev=$(disk_of $i); m=/tmp/mnt$i
  [ -n "$dev" ] || { echo "no block device"; return 1; }
  mkfs.ext4 -q -F /dev/$dev || return 1
  mkdir -p $m && mount -t ext4 /dev/$dev $m || return 1
  head -c 8388608 /dev/urandom > $m/random.bin
  cp /bin/busybox $m/busybox.copy
  for k in $(seq 50); do echo "file $k" > $m/small.$k; done
  sums=$(cd $m && md5sum random.bin busybox.copy small.*)
  sync; umount $m || return 1
  fsck.ext4 -n -f /dev/$dev || { echo "fsck -n found problems"; return 1; }
  mount -t ext4 /dev/$dev $m || return 1
  again=$(cd $m && md5sum random.bin busybox.copy small.*)
  umount $m
  [ "$sums" = "$again" ] || { echo "files read back differ:"; echo "$sums"; echo "$again"; return 1; }
  echo "detail: mkfs.ext4, 52 files (8 MiB random) written, sync, fsck -n -f clean, all read back identical after a remount"
}

i=0
for n in $QUEUES; do
  eval want=\$MD5_$i
  run_case blk$i-q$n-pattern pattern $i "$want"
  run_case blk$i-q$n-ext4 filesystem $i
  i=$((i + 1))
done
