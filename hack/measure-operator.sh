#!/usr/bin/env bash
# Runs the release lvms-operator out of cluster against the API double served on loopback, with
# NODES nodes reporting Ready, waits for the LVMCluster to become Ready, lets it idle, and prints
# its resident memory and reconcile count. Usage: hack/measure-operator.sh [NODES] [IDLE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-50}; idle=${2:-30}
cargo build --release --locked -q -p lvms-operator -p api-double --features api-double/server
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
{
  echo "apiVersion: v1"; echo "kind: Namespace"; echo "metadata: {name: openshift-storage}"; echo "---"
  cat config/samples/lvm_v1alpha1_lvmcluster.yaml; echo "---"
  for i in $(seq 1 "$nodes"); do
    printf 'apiVersion: v1\nkind: Node\nmetadata: {name: node-%03d}\n---\n' "$i"
    printf 'apiVersion: lvm.topolvm.io/v1alpha1\nkind: LVMVolumeGroupNodeStatus\nmetadata: {name: node-%03d, namespace: openshift-storage}\nspec: {nodeStatus: [{name: vg1, status: Ready, devices: [/dev/sdb]}]}\n---\n' "$i"
  done
} > "$work/seed.yaml"
port=$((20000 + RANDOM % 20000))
./target/release/api-double-server --addr "127.0.0.1:$port" --kubeconfig "$work/kubeconfig" --seed "$work/seed.yaml" &
for _ in $(seq 50); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
KUBECONFIG=$work/kubeconfig RUST_LOG=warn ./target/release/lvms-operator --namespace openshift-storage --metrics-insecure --health-addr "127.0.0.1:$((port + 1))" &
op=$!
url=http://127.0.0.1:$port/apis/lvm.topolvm.io/v1alpha1/namespaces/openshift-storage/lvmclusters/my-lvmcluster
for _ in $(seq 100); do
  state=$(curl -s "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("state",""))' 2>/dev/null || true)
  [ "$state" = Ready ] && break; sleep 0.2
done
echo "LVMCluster state: $state"
sleep "$idle"
grep -E 'VmRSS|VmHWM' "/proc/$op/status"
curl -s "http://127.0.0.1:$((port + 1))/metrics" | grep -E '^lvms_operator_reconciles_total|^lvms_operator_reconcile_duration_seconds_(sum|count)'
