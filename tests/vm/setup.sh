#!/usr/bin/env bash
# Installs what the real-LVM tests need on Debian bookworm (root): QEMU, LVM, filesystems, and a
# Debian kernel unpacked into $LVMS_VM_KERNEL_DIR (default /var/tmp/lvms-vm-kernel) without
# installing it (no initramfs generation, host boot untouched). Idempotent; prints what it does.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
KDIR=${LVMS_VM_KERNEL_DIR:-/var/tmp/lvms-vm-kernel}
PKGS=(busybox-static lvm2 thin-provisioning-tools xfsprogs e2fsprogs udev kmod xz-utils fdisk util-linux cryptsetup-bin)

missing() { for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"; done; }

# qemu-system-x86 comes from bookworm-backports: these machines ship qemu-utils 10 from there,
# which bookworm's qemu-system-x86 7.2 refuses to sit beside.
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(grep -m1 -oE 'https?://[^ ]+/debian/?' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "vm/setup.sh: no Debian mirror in the apt sources" >&2; exit 1; }
  echo "deb $mirror bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
  updated=0
fi
need=$(missing "${PKGS[@]}" qemu-system-x86)
if [ -n "$need" ] || [ "${updated:-1}" = 0 ] || ! ls "$KDIR"/boot/vmlinuz-* >/dev/null 2>&1; then
  apt-get update -qq
fi
if [ -n "$(missing qemu-system-x86)" ]; then
  apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
fi
need=$(missing "${PKGS[@]}")
# shellcheck disable=SC2086
[ -z "$need" ] || apt-get install -y -qq --no-install-recommends $need
if ! ls "$KDIR"/boot/vmlinuz-* >/dev/null 2>&1; then
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q "$kpkg" >/dev/null)
  mkdir -p "$KDIR"
  dpkg-deb -x "$tmp"/"$kpkg"_*.deb "$KDIR"
  rm -rf "$tmp"
  depmod -b "$KDIR" "${kpkg#linux-image-}"
  echo "vm/setup.sh: kernel ${kpkg#linux-image-} unpacked in $KDIR"
fi
