#!/usr/bin/env bash
# promtool, Prometheus's rule checker and rule unit tester, for operator/tests/alerts.rs: the
# alerts in config/prometheus are evaluated by Prometheus's own engine on synthetic series.
# Taken out of Debian's prometheus package rather than installing it, which would also start a
# Prometheus server. Installs into $LVMS_TOOLS_DIR (default /var/tmp/lvms-tools); idempotent.
set -euo pipefail
dest=${LVMS_TOOLS_DIR:-/var/tmp/lvms-tools}
if "$dest/promtool" --version >/dev/null 2>&1; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# apt-get download needs the package lists; a fresh machine may have none yet.
apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }
dpkg-deb -x prometheus_*.deb root
install -D -m 0755 root/usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version | head -1
