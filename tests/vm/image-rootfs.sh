#!/usr/bin/env bash
# Builds the runtime stage of images/vg-manager.Dockerfile as a directory, without a container
# engine: debootstrap of the same Debian release with the packages that stage installs (read
# from the Dockerfile, so the two cannot drift). vg-manager/tests/vm_image.rs copies the freshly
# built binary and images/lvm.conf into it, as the Dockerfile's COPY lines do, and runs the agent
# there against real LVM in the guest, mounted the way the DaemonSet mounts the host.
# Idempotent: rebuilt only when the package list changes. Root; about 40 s and 350 MB.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ROOT=${LVMS_IMAGE_ROOTFS:-/var/tmp/lvms-image-rootfs}
here=$(cd "$(dirname "$0")/../.." && pwd)
dockerfile=$here/images/vg-manager.Dockerfile

# The last stage: its base image and the packages of its `apt-get install`.
stage=$(awk '/^FROM /{buf=""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$dockerfile")
base=$(printf '%s\n' "$stage" | awk '/^FROM /{print $2; exit}')
case $base in
  *debian:bookworm*) suite=bookworm ;;
  *) echo "image-rootfs.sh: runtime base $base is not Debian bookworm" >&2; exit 1 ;;
esac
pkgs=$(printf '%s\n' "$stage" | tr -d '\\' | tr '\n' ' ' \
  | sed -n 's/.*--no-install-recommends \([^&]*\)&&.*/\1/p' | xargs)
[ -n "$pkgs" ] || { echo "image-rootfs.sh: no apt-get install in the runtime stage" >&2; exit 1; }
stamp="$suite: $pkgs"
if [ -f "$ROOT/.lvms-image" ] && [ "$(cat "$ROOT/.lvms-image")" = "$stamp" ]; then
  exit 0
fi

command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq --no-install-recommends debootstrap; }
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(grep -m1 -hoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
rm -rf "$ROOT.partial"
debootstrap --variant=minbase --include="${pkgs// /,}" "$suite" "$ROOT.partial" "$mirror" >"$ROOT.log" 2>&1 \
  || { tail -20 "$ROOT.log" >&2; echo "image-rootfs.sh: debootstrap failed" >&2; exit 1; }
# What the Dockerfile's `apt-get clean && rm -rf /var/lib/apt/lists/*` leaves out.
rm -rf "$ROOT.partial"/var/cache/apt/archives/*.deb "$ROOT.partial"/var/lib/apt/lists/*
echo "$stamp" >"$ROOT.partial/.lvms-image"
rm -rf "$ROOT"
mv "$ROOT.partial" "$ROOT"
echo "image-rootfs.sh: $ROOT ($suite: $pkgs)"
