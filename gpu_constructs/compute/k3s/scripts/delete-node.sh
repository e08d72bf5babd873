#!/usr/bin/env bash
# Drain a node and delete its Node object before its VM is destroyed, so that a VM rebuilt under
# the same name can join again: k3s keeps each node's password in the kube-system Secret
# <node>.node-password.k3s and refuses a node of that name with another password until the Node
# is deleted, which deletes the Secret (k3s docs, "Node Registration"; pkg/nodepassword).
# Environment: KUBECONFIG, NODE, DRAIN_SECONDS (default 300).
# Exit 0 when the API is gone (before or during the run) or there is no kubeconfig, after printing
# the command to run by hand; exit 1 when the API refuses the delete.
set -euo pipefail

node="${NODE:?NODE is required}"
: "${KUBECONFIG:?KUBECONFIG is required}"
export KUBECONFIG
drain_seconds="${DRAIN_SECONDS:-300}"
hint="if ${node} is rebuilt, run 'kubectl delete node ${node}' before it boots, or k3s refuses it (node password)"
if [ ! -f "$KUBECONFIG" ]; then
  # A whole-stack destroy of a cluster that never came up, or a machine without the stack's
  # kubeconfig: the VM goes either way.
  echo "WARNING: no kubeconfig at ${KUBECONFIG}, so ${node} is not deleted from the cluster; ${hint}" >&2
  exit 0
fi
command -v kubectl >/dev/null || {
  echo "ERROR: kubectl is not on PATH; run 'kubectl delete node ${node}' before the new VM boots" >&2
  exit 1
}
# An API that stops answering (the whole stack is being destroyed and the servers go down in
# parallel with this VM) lets the destroy go on, at any step: Terraform fails a destroy whose
# destroy-time provisioner fails (on_failure defaults to fail) and leaves the VM behind. A refused
# call (Forbidden, a webhook) still stops it.
api_gone() {
  grep -qiE 'unable to connect|connection refused|i/o timeout|timed out|timeout|no route to host|EOF|was refused|connect: ' "$1"
}
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
if ! found="$(kubectl get node "$node" --ignore-not-found -o name --request-timeout=30s 2>"$errors")"; then
  cat "$errors" >&2
  echo "ERROR: the API does not answer; ${hint}" >&2
  exit 0
fi
if [ -z "$found" ]; then
  echo "delete-node: ${node} is not registered"
  exit 0
fi
# JupyterHub's notebook servers are bare Pods, which drain refuses to evict without --force
# (kubectl pkg/drain/filters.go, unreplicatedFilter): they would die with the VM anyway. Name
# them, then evict them with the rest.
notebooks="$(kubectl get pods --all-namespaces --field-selector "spec.nodeName=${node}" \
  -l component=singleuser-server -o name --request-timeout=30s 2>/dev/null || true)"
if [ -n "$notebooks" ]; then
  echo "delete-node: stopping the notebook servers on ${node}: $(tr "\n" " " <<<"$notebooks")" >&2
fi
if ! kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force \
  --timeout="${drain_seconds}s"; then
  echo "WARNING: ${node} did not drain within ${drain_seconds}s; deleting it anyway" >&2
fi
if ! kubectl delete node "$node" --timeout=120s 2>"$errors"; then
  cat "$errors" >&2
  if api_gone "$errors"; then
    echo "ERROR: the API stopped answering before ${node} was deleted; ${hint}" >&2
    exit 0
  fi
  echo "ERROR: the API refused to delete node ${node}" >&2
  exit 1
fi
echo "delete-node: deleted ${node}"
