#!/usr/bin/env bash
# Installs what lvms-rs needs on a fresh Debian bookworm machine that already has a Rust toolchain
# (cargo, clippy, rustfmt). Idempotent; run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in build-essential pkg-config ca-certificates git make protobuf-compiler; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }
# Prometheus's promtool: the alert rules are tested with Prometheus's own rule engine.
"$(dirname "$0")/promtool.sh"
# Real LVM runs in a QEMU guest during the tests: QEMU, lvm2, filesystems and a Debian kernel.
"$(dirname "$0")/../tests/vm/setup.sh"
# The vg-manager image's runtime stage as a directory, for the guest test of the image.
"$(dirname "$0")/../tests/vm/image-rootfs.sh"
