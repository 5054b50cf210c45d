#!/usr/bin/env bash
# Measures the release vg-manager on real LVM in the QEMU guest, against the API double served
# on loopback: time from a new LVMVolumeGroup (two 2 GiB disks, thin) to Ready, then resident
# memory and commands run while idle. Usage: hack/measure-vg-manager.sh [IDLE_SECONDS] [RESYNC]
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-120}; resync=${2:-60}
cargo build --release --locked -q -p vg-manager -p api-double --features api-double/server
mkdir -p target/measure
cat > target/measure/seed.yaml <<'EOS'
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: lvm.topolvm.io/v1alpha1
kind: LVMVolumeGroup
metadata: {name: vg1, namespace: openshift-storage}
spec:
  deviceSelector: {paths: [/dev/vda, /dev/vdb]}
  thinPoolConfig: {name: thin-pool-1, sizePercent: 90, overprovisionRatio: 10}
EOS
cat > target/measure/in-guest.sh <<EOS
set -euo pipefail
cd $PWD
./target/release/api-double-server --addr 127.0.0.1:18080 --kubeconfig /run/kubeconfig --seed target/measure/seed.yaml 2>/run/server.log &
for _ in \$(seq 100); do [ -s /run/kubeconfig ] && break; sleep 0.1; done
[ -s /run/kubeconfig ] || { echo "the API double did not start:"; cat /run/server.log; exit 1; }
start=\$(date +%s.%N)
KUBECONFIG=/run/kubeconfig NODE_NAME=node-a POD_NAMESPACE=openshift-storage RUST_LOG=warn \
  ./target/release/vg-manager run --metrics-insecure --health-addr 127.0.0.1:18081 --resync $resync 2>/run/agent.log &
agent=\$!
url=http://127.0.0.1:18080/apis/lvm.topolvm.io/v1alpha1/namespaces/openshift-storage/lvmvolumegroupnodestatuses/node-a
for _ in \$(seq 600); do curl -sf "\$url" | grep -q '"status":"Ready"' && break; sleep 0.2; done
curl -sf "\$url" | grep -q '"status":"Ready"' || { echo "not Ready after 120 s:"; curl -s "\$url"; echo; cat /run/agent.log; exit 1; }
echo "new LVMVolumeGroup to Ready on two 2 GiB disks: \$(echo "\$(date +%s.%N) - \$start" | bc) s"
before=\$(curl -s http://127.0.0.1:18081/metrics | awk '/^vg_manager_lvm_commands_total/{print \$2}')
sleep $idle
after=\$(curl -s http://127.0.0.1:18081/metrics | awk '/^vg_manager_lvm_commands_total/{print \$2}')
echo "commands while idle for ${idle} s (resync ${resync} s): \$((after - before))"
grep -E 'VmRSS|VmHWM' /proc/\$agent/status
curl -s http://127.0.0.1:18081/metrics | grep -E '^topolvm_|^vg_manager_passes_total'
EOS
tests/vm/run-in-vm.sh -d 2G -d 2G -t 900 -- bash target/measure/in-guest.sh
