#!/usr/bin/env bash
# Drain a node and delete its Node object when the machine under it leaves the cluster: a Proxmox VM
# destroyed (a rebuild with -replace, or a destroy), or a k3s host dropped from the stack's hosts.
# A machine rebuilt under the same name can then join again: k3s keeps each node's password in the
# kube-system Secret <node>.node-password.k3s and refuses a node of that name with another password
# until the Node is deleted, which deletes the Secret (k3s docs, "Node Registration"; pkg/nodepassword).
# Runs on the machine that runs Terraform, as a destroy-time step.
# Environment:
#   NODE            the node's name, or
#   NODE_IP         its InternalIP (the name is looked up)
#   the API, one of:
#     KUBECONFIG    kubectl on this machine with that kubeconfig
#     SSH_USER, SSH_HOST, SSH_KEY, HOST_KEY (optional, '<type> <base64>')
#                   'sudo k3s kubectl' on the k3s server over SSH, the server's key pinned
#   DRAIN_SECONDS   how long the drain may take (default 300); a node that is not Ready (its host is
#                   gone or its kubelet stopped) is deleted without one: its kubelet can never confirm
#                   that a pod stopped, so a drain would only wait out the time
#   API_GONE        skip (default): an API that does not answer lets the destroy go on, after printing
#                   the command to run by hand (a whole-stack destroy where the servers go down in
#                   parallel); fail: it fails the step, which stays in the state for the next apply
#   UNINSTALL_AGENT 1: once the Node is deleted, run k3s-agent-uninstall.sh on the node (NODE_IP) over
#                   SSH as NODE_SSH_USER with NODE_SSH_KEY and NODE_HOST_KEY (default: the server's), so
#                   that the host never registers again (see below)
#   WARN_LOCAL_VOLUMES 1: name the claims whose local volumes are on the node (see below)
# Exit 1 when the API refuses the delete, the uninstall fails, or (API_GONE=fail) the API is gone.
set -euo pipefail

drain_seconds="${DRAIN_SECONDS:-300}"
api_gone_mode="${API_GONE:-skip}"
node="${NODE:-}"
node_ip="${NODE_IP:-}"
if [ -z "$node" ] && [ -z "$node_ip" ]; then
  echo "ERROR: delete-node: NODE or NODE_IP is required" >&2
  exit 2
fi
case "$api_gone_mode" in
  skip | fail) ;;
  *) echo "ERROR: delete-node: API_GONE is '${api_gone_mode}': use skip or fail" >&2; exit 2 ;;
esac
label="${node:-the node at ${node_ip}}"

errors="$(mktemp)"
server_known="$(mktemp)"
node_known="$(mktemp)"
trap 'rm -f "$errors" "$server_known" "$node_known"' EXIT

# ssh_to USER HOST KEY HOST_KEY KNOWN_HOSTS COMMAND: one command on a host, checking its key when
# one is given (as node-drain.sh does; without one, neither checked nor recorded).
ssh_to() {
  local options=(-n -i "$3" -o BatchMode=yes -o ConnectTimeout=10)
  if [ -n "$4" ]; then
    printf '%s %s\n' "$2" "$4" >"$5"
    options+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$5")
  else
    options+=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null)
  fi
  # shellcheck disable=SC2029 # the remote command is composed here, with local values, on purpose
  ssh "${options[@]}" "$1@$2" "$6"
}

if [ -n "${SSH_HOST:-}" ]; then
  : "${SSH_USER:?SSH_USER is required}" "${SSH_KEY:?SSH_KEY is required}"
  where="the k3s server ${SSH_HOST}"
  # kubectl ARGS...: k3s' kubectl on the server, each argument quoted for its shell.
  kubectl() {
    # A server without k3s (reinstalled before a -replace of the cluster) has no cluster to leave.
    local command="command -v k3s >/dev/null || { echo 'delete-node: no k3s on the server' >&2; exit 3; }; sudo k3s kubectl"
    local arg
    for arg in "$@"; do command+=" $(printf '%q' "$arg")"; done
    ssh_to "$SSH_USER" "$SSH_HOST" "$SSH_KEY" "${HOST_KEY:-}" "$server_known" "$command"
  }
  hint="'sudo k3s kubectl delete node ${node:-<node>}' on ${SSH_HOST}"
else
  : "${KUBECONFIG:?KUBECONFIG or SSH_HOST is required}"
  export KUBECONFIG
  where="the API of ${KUBECONFIG}"
  if [ ! -f "$KUBECONFIG" ]; then
    # A whole-stack destroy of a cluster that never came up, or a machine without the stack's
    # kubeconfig: the VM goes either way.
    echo "WARNING: no kubeconfig at ${KUBECONFIG}, so ${label} is not deleted from the cluster;" \
      "if it is rebuilt, run 'kubectl delete node ${node}' before it boots, or k3s refuses it (node password)" >&2
    exit 0
  fi
  command -v kubectl >/dev/null || {
    echo "ERROR: kubectl is not on PATH; run 'kubectl delete node ${node}' before the new VM boots" >&2
    exit 1
  }
  hint="'kubectl delete node ${node:-<node>}'"
fi

uninstall_agent() {
  [ "${UNINSTALL_AGENT:-0}" = 1 ] || return 0
  local host="${node_ip:?NODE_IP is required to uninstall k3s-agent}" status=0 output
  # k3s' own removal (k3s-io/k3s install.sh, create_uninstall): k3s-killall.sh stops the service and
  # every pod's containers, then the unit, /etc/rancher/k3s, /var/lib/rancher/k3s, /var/lib/kubelet
  # and the binary go. Only stopping the unit would leave the pods' containers running (the unit has
  # KillMode=process) and a host whose next boot starts k3s-agent, which registers the Node again
  # with the token it has. The storage tiers' directories are outside /var/lib/rancher/k3s
  # (gpu_constructs/storage.py), so volume data on the host stays.
  output="$(ssh_to "${NODE_SSH_USER:-${SSH_USER:-}}" "$host" "${NODE_SSH_KEY:-${SSH_KEY:-}}" \
    "${NODE_HOST_KEY:-}" "$node_known" \
    'if [ -x /usr/local/bin/k3s-agent-uninstall.sh ]; then sudo /usr/local/bin/k3s-agent-uninstall.sh >/dev/null 2>&1 && echo uninstalled; else echo absent; fi' \
    2>"$errors")" || status=$?
  if [ "$status" -eq 255 ]; then
    cat "$errors" >&2
    echo "WARNING: delete-node: ${host} does not answer over SSH, so k3s-agent is not uninstalled there;" \
      "if the host comes back, run 'sudo /usr/local/bin/k3s-agent-uninstall.sh' on it, or its k3s-agent" \
      "registers it again" >&2
    return 0
  fi
  if [ "$status" -ne 0 ]; then
    cat "$errors" >&2
    echo "ERROR: delete-node: k3s-agent-uninstall.sh failed on ${host} (exit ${status}); run it there by hand" >&2
    exit 1
  fi
  case "$output" in
    uninstalled) echo "delete-node: ${host}: k3s-agent uninstalled" ;;
    *) echo "delete-node: ${host}: no k3s-agent installed" ;;
  esac
}

# An API that stops answering (the whole stack is being destroyed and the servers go down in
# parallel with this machine) is no refusal: ssh's own failure (255) or kubectl's connection errors.
# Terraform fails a destroy whose destroy-time provisioner fails (on_failure defaults to fail) and
# keeps the resource; API_GONE says which of the two a step wants. A refused call (Forbidden, a
# webhook) always stops it.
api_gone() {
  grep -qiE 'unable to connect|connection refused|i/o timeout|timed out|timeout|no route to host|EOF|was refused|connect: |ssh: ' "$1"
}
gone() {
  if grep -q 'delete-node: no k3s on the server' "$errors"; then
    echo "delete-node: ${SSH_HOST} runs no k3s, so there is no cluster to remove ${label} from"
    uninstall_agent
    exit 0
  fi
  cat "$errors" >&2
  if [ "$api_gone_mode" = fail ]; then
    echo "ERROR: delete-node: ${where} does not answer, so ${label} is neither drained nor deleted" \
      "and its host keeps running k3s. Bring the server back and apply again; if the cluster is gone" \
      "for good, remove this step from the state (terraform state rm <address>)." >&2
    exit 1
  fi
  echo "ERROR: ${where} does not answer; if ${label} is rebuilt, run ${hint} before it boots, or k3s" \
    "refuses it (node password)" >&2
  exit 0
}

if [ -z "$node" ]; then
  # shellcheck disable=SC2016 # a jsonpath, not a shell expansion
  if ! nodes="$(kubectl get nodes --request-timeout=30s \
    -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' \
    2>"$errors")"; then
    gone
  fi
  node="$(awk -v ip="$node_ip" '$2 == ip { print $1; exit }' <<<"$nodes")"
  label="$node"
  [ -n "$node" ] || label="the node at ${node_ip}"
  hint="${hint/<node>/${node:-<node>}}"
fi

if [ -z "$node" ]; then
  echo "delete-node: no node with InternalIP ${node_ip} is registered"
  uninstall_agent
  exit 0
fi
# The node and its Ready condition in one call: "<name> <True|False|Unknown>".
if ! found="$(kubectl get node "$node" --ignore-not-found --request-timeout=30s \
  -o 'jsonpath={.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}' 2>"$errors")"; then
  gone
fi
if [ -z "$found" ]; then
  echo "delete-node: ${node} is not registered"
  uninstall_agent
  exit 0
fi

# WARN_LOCAL_VOLUMES=1: the volumes local-path made on this node (a Bound PersistentVolume whose node
# affinity names it) hold their data on the host alone, and a pod that used one cannot start on any
# other node. They are named, so that a database replica or a notebook's home is not lost silently.
volumes=""
if [ "${WARN_LOCAL_VOLUMES:-0}" = 1 ]; then
  # shellcheck disable=SC2016 # a jsonpath, not a shell expansion
  volumes="$(kubectl get pv --request-timeout=30s \
    -o 'jsonpath={range .items[*]}{.spec.claimRef.namespace}{"/"}{.spec.claimRef.name}{" "}{.status.phase}{" "}{.spec.nodeAffinity.required.nodeSelectorTerms[*].matchExpressions[*].values[*]}{"\n"}{end}' \
    2>/dev/null | awk -v n="$node" '$2 == "Bound" { for (i = 3; i <= NF; i++) if ($i == n) { print $1; break } }' || true)"
fi
if [ -n "$volumes" ]; then
  echo "WARNING: delete-node: ${node} holds the local volumes of these claims, whose data stays on its" \
    "host, out of the cluster's reach: $(tr "\n" " " <<<"$volumes")" >&2
  echo "Their pods stay Pending until each claim is deleted (kubectl delete pvc -n <namespace> <name>)" \
    "and made again on another node; a database replica is then rebuilt from the primary." >&2
fi

ready="$(awk '{ print $2 }' <<<"$found")"
if [ "$ready" = False ] || [ "$ready" = Unknown ]; then
  # The node controller marks a node whose kubelet stopped reporting Ready=Unknown; evictions there
  # never complete (no kubelet confirms the pods stopped), so a drain could only time out. Deleting
  # the Node lets the pod garbage collector delete its pods (kube-controller-manager podgc,
  # gcOrphaned) and their controllers make them again on the other nodes.
  echo "delete-node: ${node} is not Ready (${ready:-no status}); deleting it without a drain" >&2
else
  # JupyterHub's notebook servers are bare Pods, which drain refuses to evict without --force
  # (kubectl pkg/drain/filters.go, unreplicatedFilter): they would die with the machine anyway.
  # Name them, then evict them with the rest.
  notebooks="$(kubectl get pods --all-namespaces --field-selector "spec.nodeName=${node}" \
    -l component=singleuser-server -o name --request-timeout=30s 2>/dev/null || true)"
  if [ -n "$notebooks" ]; then
    echo "delete-node: stopping the notebook servers on ${node}: $(tr "\n" " " <<<"$notebooks")" >&2
  fi
  if ! kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force \
    --timeout="${drain_seconds}s"; then
    echo "WARNING: ${node} did not drain within ${drain_seconds}s; deleting it anyway" >&2
  fi
fi
if ! kubectl delete node "$node" --timeout=120s 2>"$errors"; then
  if api_gone "$errors"; then
    gone
  fi
  cat "$errors" >&2
  echo "ERROR: the API refused to delete node ${node}" >&2
  exit 1
fi
echo "delete-node: deleted ${node}"
uninstall_agent
