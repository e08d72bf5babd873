#!/usr/bin/env bash
# Drain a node and delete its Node object before its VM is destroyed, so that a VM rebuilt under
# the same name can join again: k3s keeps each node's password in the kube-system Secret
# <node>.node-password.k3s and refuses a node of that name with another password until the Node
# is deleted, which deletes the Secret (k3s docs, "Node Registration"; pkg/nodepassword).
# Environment: KUBECONFIG, NODE, DRAIN_SECONDS (default 300).
set -euo pipefail

node="${NODE:?NODE is required}"
: "${KUBECONFIG:?KUBECONFIG is required}"
export KUBECONFIG
drain_seconds="${DRAIN_SECONDS:-300}"
if [ ! -f "$KUBECONFIG" ]; then
  echo "delete-node: no kubeconfig at ${KUBECONFIG}: the cluster never came up, nothing to delete"
  exit 0
fi
command -v kubectl >/dev/null || {
  echo "ERROR: kubectl is not on PATH; run 'kubectl delete node ${node}' before the new VM boots" >&2
  exit 1
}
# When the API does not answer (the whole stack is being destroyed, servers first), the VM goes
# anyway: say what to do by hand if it is to be rebuilt.
if ! found="$(kubectl get node "$node" --ignore-not-found -o name --request-timeout=30s)"; then
  echo "ERROR: the API does not answer; if ${node} is rebuilt, run 'kubectl delete node ${node}'" \
    "before it boots, or k3s refuses it (node password)" >&2
  exit 0
fi
if [ -z "$found" ]; then
  echo "delete-node: ${node} is not registered"
  exit 0
fi
if ! kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout="${drain_seconds}s"; then
  echo "WARNING: ${node} did not drain within ${drain_seconds}s; deleting it anyway" >&2
fi
kubectl delete node "$node" --timeout=120s
echo "delete-node: deleted ${node}"
