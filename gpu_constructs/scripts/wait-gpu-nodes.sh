#!/usr/bin/env bash
# Wait, bounded, until every GPU worker has registered, is Ready and offers its GPUs to the
# scheduler (allocatable nvidia.com/gpu, which the GPU Operator's device plugin sets). Nothing
# else in an apply sees a worker that never joins: Helm's waits pass without GPU nodes (DaemonSets
# with nothing to schedule are ready), and a worker's first boot loops on the API with no bound.
# Environment: KUBECONFIG, NODES (space-separated node names), GPUS (allocatable nvidia.com/gpu
# each node must offer), WAIT_SECONDS (default 1800).
set -euo pipefail

: "${KUBECONFIG:?KUBECONFIG is required}"
export KUBECONFIG
nodes="${NODES:?NODES is required}"
gpus="${GPUS:?GPUS is required}"
wait_seconds="${WAIT_SECONDS:-1800}"
command -v kubectl >/dev/null || {
  echo "ERROR: kubectl is not on PATH; it is needed to wait for the GPU nodes" >&2
  exit 1
}

# One line per node: name, Ready status, allocatable GPUs.
template='{range .items[*]}{.metadata.name}{" "}{range .status.conditions[?(@.type=="Ready")]}{.status}{end}{" "}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}'
deadline=$((SECONDS + wait_seconds))
while :; do
  waiting=""
  listed="$(kubectl get nodes -o jsonpath="$template" --request-timeout=30s 2>/dev/null || true)"
  for node in $nodes; do
    line="$(awk -v n="$node" '$1 == n' <<<"$listed")"
    ready="$(awk '{print $2}' <<<"$line")"
    allocatable="$(awk '{print $3}' <<<"$line")"
    if [ -z "$line" ]; then
      waiting="${waiting} ${node}(not registered)"
    elif [ "$ready" != "True" ]; then
      waiting="${waiting} ${node}(not Ready)"
    elif [ "${allocatable:-0}" -lt "$gpus" ] 2>/dev/null || [ -z "$allocatable" ]; then
      waiting="${waiting} ${node}(${allocatable:-0} of ${gpus} GPUs)"
    fi
  done
  if [ -z "$waiting" ]; then
    echo "wait-gpu-nodes: every GPU node is Ready with ${gpus} GPUs:${nodes:+ }${nodes}"
    exit 0
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ERROR: after ${wait_seconds}s, GPU nodes still missing:${waiting}." >&2
    echo "A node that never registered: its VM console or 'journalctl -u k3s-agent' (a wrong agent" \
      "token, the API address); not Ready: 'kubectl describe node <node>'; without its GPUs: the GPU" \
      "Operator's pods on it ('kubectl -n gpu-operator get pods -o wide')." >&2
    exit 1
  fi
  sleep 15
done
