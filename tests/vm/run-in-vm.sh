#!/bin/bash
# run-in-vm.sh - run ONE command as root inside a throw-away QEMU guest that boots Debian's kernel
# over the HOST's own root filesystem (read-only 9p + tmpfs overlay: the guest sees the host's
# files and freshly built test binaries; its writes are discarded), with blank virtio disks.
# Real device-mapper, LVM thin pools, XFS and ext4 on a host whose kernel has no device-mapper.
# Adapted from the shared recipe; tests/vm/setup.sh installs what it needs.
#
# Usage:  run-in-vm.sh [options] [--] <command> [args...]
#   -d SIZE[:ro]  attach a new blank raw disk (repeatable): /dev/vda, /dev/vdb, ... in order,
#                 serials lvmsvm0, lvmsvm1 ... (/dev/disk/by-id/virtio-lvmsvm0); ":ro" = read-only
#   -D FILE[:ro]  attach an existing raw image (repeatable; its state survives the VM)
#   -w DIR        share host DIR read-write at the same path (repeatable)
#   -e VAR=VAL    export in the guest (repeatable)
#   -m MEM        guest RAM (default 1G)   -c N vCPUs (default nproc, max 4)
#   -t SECS       whole-VM timeout (default 600)   -U  no udevd in the guest
# Env: LVMS_VM_KERNEL_DIR (default /var/tmp/lvms-vm-kernel, from setup.sh; else /boot),
#      LVMS_VM_CACHE (default /var/tmp/lvms-vm-cache), LVMS_VM_KEEP=1 keeps the work dir.
# Output: the command's stdout/stderr replayed after the VM exits; exit status = the command's;
# 125 = the VM itself failed or timed out (console tail on stderr).
set -euo pipefail

DEVS=(); RWDIRS=(); ENVS=(); MEM=1G; TIMEOUT=600; KERNEL=""; UDEV=1; ACCEL=""
CPUS=$(nproc); if [ "$CPUS" -gt 4 ]; then CPUS=4; fi
while getopts "d:D:w:m:c:t:k:e:Ua:h" o; do
  case $o in
    d) DEVS+=("new:$OPTARG");; D) f=${OPTARG%:ro}; DEVS+=("img:$(realpath "$f")${OPTARG#"$f"}");; w) RWDIRS+=("$(realpath "$OPTARG")");;
    m) MEM=$OPTARG;; c) CPUS=$OPTARG;; t) TIMEOUT=$OPTARG;; k) KERNEL=$OPTARG;;
    e) ENVS+=("$OPTARG");; U) UDEV=0;; a) ACCEL=$OPTARG;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2;;
  esac
done
shift $((OPTIND-1))
[ $# -ge 1 ] || { echo "usage: $0 [opts] [--] cmd [args]   ($0 -h for help)" >&2; exit 2; }
die() { echo "run-in-vm: $*" >&2; exit 125; }

# ---- kernel: newest /boot/vmlinuz-* that has /lib/modules/<ver> -------------------------
KROOT=${LVMS_VM_KERNEL_DIR:-/var/tmp/lvms-vm-kernel}   # kernel .deb unpacked here by setup.sh
if ls "$KROOT"/boot/vmlinuz-* >/dev/null 2>&1; then KROOT=$(realpath "$KROOT"); else KROOT=""; fi
if [ -z "$KERNEL" ]; then
  for k in $(ls -1v "$KROOT"/boot/vmlinuz-* 2>/dev/null | tac); do
    [ -d "$KROOT/lib/modules/${k##*/vmlinuz-}/kernel/drivers/md" ] && { KERNEL=$k; break; }
  done
fi
[ -n "$KERNEL" ] && [ -r "$KERNEL" ] || die "no kernel: run tests/vm/setup.sh"
KVER=${KERNEL##*/vmlinuz-}; MODDIR=$KROOT/lib/modules/$KVER
if [ ! -s "$MODDIR/modules.dep" ]; then      # extracted .deb: postinst's depmod never ran
  command -v depmod >/dev/null || die "need kmod (depmod)"; depmod -b "${KROOT:-/}" "$KVER"
fi
BUSYBOX=/bin/busybox                       # must be the static one (busybox-static)
[ -x "$BUSYBOX" ] || die "need busybox-static"
QEMU=$(command -v qemu-system-x86_64) || die "need qemu-system-x86"
if [ -z "$ACCEL" ]; then
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
if [ "$ACCEL" = kvm ]; then CPU=host; else CPU=max; fi

CACHE=${LVMS_VM_CACHE:-/var/tmp/lvms-vm-cache}; mkdir -p "$CACHE"
# ---- uncompressed vmlinux for direct PVH boot (skips ~3.5s of xz decompression under TCG)
BOOTK=$KERNEL
VMLINUX=$CACHE/vmlinux-$KVER
if [ ! -s "$VMLINUX" ] && grep -q '^CONFIG_PVH=y' "$KROOT/boot/config-$KVER" 2>/dev/null; then
  off=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$KERNEL" 2>/dev/null | head -1 | cut -d: -f1 || true)
  if [ -n "$off" ] && tail -c +$((off+1)) "$KERNEL" | xz -dc > "$VMLINUX.$$" 2>/dev/null; [ -s "$VMLINUX.$$" ] \
     && [ "$(head -c4 "$VMLINUX.$$" | od -An -c | tr -d ' ')" = 177ELF ]; then
    mv "$VMLINUX.$$" "$VMLINUX"
  else rm -f "$VMLINUX.$$"; fi
fi
[ -s "$VMLINUX" ] && BOOTK=$VMLINUX

# ---- tiny initramfs (cached per kernel): busybox + virtio/9p/overlay modules ------------
INITRD=$CACHE/initrd-$KVER-v5.cpio.gz
EARLY_MODS="virtio_pci virtio_blk 9pnet_virtio 9p overlay"  # dm/xfs/ext4 load on demand later
if [ ! -s "$INITRD" ]; then
  T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
  mkdir -p "$T"/{bin,dev,proc,sys,newroot,lower,upper,mods}
  cp "$BUSYBOX" "$T/bin/busybox"
  order=()   # modules.dep is transitively closed; load deps in reverse order, then module
  for m in $EARLY_MODS; do
    m2=${m//_/[-_]}
    line=$(grep -E "/${m2}\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" || true)
    if [ -z "$line" ]; then grep -qE "/${m2}\.ko" "$MODDIR/modules.builtin" || die "module $m missing"; continue; fi
    deps=(${line#*:})
    for ((i=${#deps[@]}-1; i>=0; i--)); do order+=("${deps[i]}"); done
    order+=("${line%%:*}")
  done
  n=0; : > "$T/mods/list"; : > "$T/seen"
  for p in "${order[@]}"; do
    grep -qxF "$p" "$T/seen" && continue; echo "$p" >> "$T/seen"
    out=$T/mods/$(printf %03d $n).ko; n=$((n+1))
    case $p in
      *.xz) xz -dc "$MODDIR/$p" > "$out";; *.zst) zstd -qdc "$MODDIR/$p" > "$out";;
      *.gz) gzip -dc "$MODDIR/$p" > "$out";; *) cp "$MODDIR/$p" "$out";;
    esac
    basename "$out" >> "$T/mods/list"
  done
  rm -f "$T/seen"
  cat > "$T/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "rivm-init: $*" > /dev/ttyS0; poweroff -f; }
for m in $(cat /mods/list); do insmod /mods/$m || fail "insmod $m"; done
# host / read-only as overlay lower; tmpfs upper => writable root, discarded at exit
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p root"
mount -t tmpfs -o mode=0755 tmpfs /upper; mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail overlay
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run; mkdir -p /newroot/run/rivm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rivmshare /newroot/run/rivm || fail "9p share"
kroot=$(sed -n 's/.*rivm.kroot=\([^ ]*\).*/\1/p' /proc/cmdline); kv=$(uname -r)
if [ -n "$kroot" ]; then mkdir -p /newroot/lib/modules/$kv; mount --bind /newroot$kroot/lib/modules/$kv /newroot/lib/modules/$kv; fi
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash /run/rivm/stage2.sh
EOF
  chmod +x "$T/init"
  if command -v cpio >/dev/null; then CPIO=(cpio); else CPIO=("$BUSYBOX" cpio); fi
  (cd "$T" && find . | "${CPIO[@]}" -o -H newc 2>/dev/null) | gzip -1 > "$INITRD.$$"
  mv "$INITRD.$$" "$INITRD"; rm -rf "$T"; trap - EXIT
fi

# ---- per-run work dir + guest stage-2 script --------------------------------------------
W=$(mktemp -d /var/tmp/lvms-vm.XXXXXX)
[ "${LVMS_VM_KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT
mkdir -p "$W/share"
{
  echo '#!/bin/bash'
  echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb'
  echo 'mkdir -p /dev/pts /dev/shm /run/lock /run/lvm'
  echo 'mount -t devpts -o gid=5,mode=620 devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm'
  # /tmp and /var/tmp stay the host's (through the writable overlay): a clone or test binary
  # living there must remain visible in the guest.
  echo 'ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr'
  echo 'hostname rivm; : > /etc/machine-id 2>/dev/null'
  # Loopback up: tests serve an API double on 127.0.0.1 inside the guest.
  echo 'ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up'
  i=0
  for d in "${RWDIRS[@]}"; do
    printf 'mkdir -p %q; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rw%d %q\n' "$d" $i "$d"; i=$((i+1))
  done
  if [ "$UDEV" = 1 ]; then
    echo 'if [ -x /lib/systemd/systemd-udevd ]; then /lib/systemd/systemd-udevd --daemon >/dev/null 2>&1; udevadm trigger --action=add --subsystem-match=block >/dev/null 2>&1; udevadm settle -t 60; else export DM_DISABLE_UDEV=1; fi'
  else
    echo 'export DM_DISABLE_UDEV=1   # no udevd: let libdevmapper/LVM create /dev nodes itself'
  fi
  for e in "${ENVS[@]}"; do printf 'export %q\n' "$e"; done
  printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
  echo 'echo "rivm: command starts at uptime $(cut -d" " -f1 /proc/uptime)" > /dev/ttyS0'
  printf '%q ' "$@"; echo '</dev/null >/run/rivm/stdout 2>/run/rivm/stderr'
  echo 'echo $? > /run/rivm/rc.tmp; mv /run/rivm/rc.tmp /run/rivm/rc'
  echo 'sync; umount /run/rivm 2>/dev/null; /bin/busybox poweroff -f; echo o > /proc/sysrq-trigger; sleep 30'
} > "$W/share/stage2.sh"

QARGS=(-name rivm -machine q35,accel="$ACCEL" -cpu "$CPU" -smp "$CPUS" -m "$MEM"
  -nodefaults -no-user-config -display none -no-reboot
  -serial "file:$W/console.log"
  -kernel "$BOOTK" -initrd "$INITRD"
  -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init mitigations=off tsc=reliable${KROOT:+ rivm.kroot=$KROOT}"
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -fsdev local,id=share,path="$W/share",security_model=none,multidevs=remap
  -device virtio-9p-pci,fsdev=share,mount_tag=rivmshare)
i=0
for d in "${RWDIRS[@]}"; do
  QARGS+=(-fsdev local,id=rw$i,path="$d",security_model=none,multidevs=remap
          -device virtio-9p-pci,fsdev=rw$i,mount_tag=rw$i); i=$((i+1))
done
i=0
# detect-zeroes=unmap: zeros the guest writes become holes, so images stay sparse (a RAID resync
# of blank legs writes the whole disk).
for dv in "${DEVS[@]}"; do      # disks in command-line order: vda, vdb, ...
  ro=off; case $dv in *:ro) ro=on; dv=${dv%:ro};; esac
  if [ "${dv%%:*}" = new ]; then f=$W/disk$i.img; truncate -s "${dv#new:}" "$f"; else f=${dv#img:}; fi
  QARGS+=(-drive file="$f",if=none,id=d$i,format=raw,cache=unsafe,discard=unmap,detect-zeroes=unmap,aio=threads,readonly=$ro
          -device virtio-blk-pci,drive=d$i,serial=lvmsvm$i); i=$((i+1))
done

set +e
timeout -k 10 "$TIMEOUT" "$QEMU" "${QARGS[@]}" </dev/null >"$W/qemu.log" 2>&1
qrc=$?
set -e
if [ ! -f "$W/share/rc" ]; then
  echo "run-in-vm: guest did not finish (qemu rc=$qrc [124=timeout], accel=$ACCEL; LVMS_VM_KEEP=1 keeps $W); console/qemu log:" >&2
  tail -n 60 "$W/console.log" "$W/qemu.log" >&2 || true
  if [ -s "$W/share/stdout" ]; then echo "--- partial stdout:" >&2; cat "$W/share/stdout" >&2; fi
  if [ -s "$W/share/stderr" ]; then echo "--- partial stderr:" >&2; cat "$W/share/stderr" >&2; fi
  exit 125
fi
cat "$W/share/stdout"; cat "$W/share/stderr" >&2
exit "$(cat "$W/share/rc")"
