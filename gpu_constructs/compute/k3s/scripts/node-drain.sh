#!/usr/bin/env bash
# Drain a node before its driver step changes the NVIDIA driver (which may reboot the host), and
# uncordon it once the host is back with a working driver. Runs on the machine that runs Terraform
# and reaches both the node (to ask its nvidia-driver.sh whether it will change anything) and the
# k3s server (k3s kubectl) over SSH, with each host's pinned key.
# Modes (MODE, or the first argument):
#   drain     when 'nvidia-driver.sh check' on the node says the driver changes and the node is
#             registered with a running k3s server: mark the node (annotation DRAINED_KEY), cordon it
#             and evict its pods (DaemonSets stay), so PostgreSQL, Vault and the application stop
#             cleanly instead of being killed by the reboot. Nothing to change, or no cluster yet
#             (a first apply), does nothing. A drain that does not finish in DRAIN_TIMEOUT seconds
#             uncordons the node again and fails the step: nothing was changed on the host yet.
#   uncordon  a node this script drained (the annotation) is made schedulable again and unmarked;
#             a node cordoned by someone else is left alone. Runs after wait-for-reboot.sh, so only
#             once the driver answers nvidia-smi after the reboot.
# Environment:
#   SSH_USER, SSH_HOST, SSH_KEY, HOST_KEY          the k3s server (HOST_KEY optional, '<type> <base64>')
#   NODE_SSH_USER, NODE_SSH_HOST, NODE_SSH_KEY, NODE_HOST_KEY   the node (NODE_SSH_HOST is also the
#                                                  node's InternalIP)
#   DRIVER_BRANCH, DRIVER_KERNEL_MODULES           what the node's driver step installs (drain)
#   BYPASS_PDB      1: delete the pods rather than evict them (kubectl drain --disable-eviction): on a
#                   cluster of one node no PodDisruptionBudget can be met (CloudNativePG's primary
#                   PDB would block the drain for ever), and the reboot ends the pods anyway
#   DRAIN_TIMEOUT   seconds (default 600)
set -euo pipefail

mode="${1:-${MODE:-}}"
node_ip="${NODE_SSH_HOST:?NODE_SSH_HOST is required}"
: "${SSH_HOST:?SSH_HOST is required}" "${SSH_USER:?SSH_USER is required}" "${SSH_KEY:?SSH_KEY is required}"
timeout="${DRAIN_TIMEOUT:-600}"
drained_key="gpu-constructs.io/drained-for"

case "$mode" in
  drain | uncordon) ;;
  *) echo "ERROR: node-drain: MODE is '${mode}': use drain or uncordon" >&2; exit 2 ;;
esac

# The pinned keys, one known-hosts file per host, made here: files made inside a command
# substitution would outlive its subshell (the EXIT trap is this shell's).
server_known="$(mktemp)"
node_known="$(mktemp)"
errors="$(mktemp)"
trap 'rm -f "$server_known" "$node_known" "$errors"' EXIT
printf '%s %s\n' "$SSH_HOST" "${HOST_KEY:-}" >"$server_known"
printf '%s %s\n' "$node_ip" "${NODE_HOST_KEY:-}" >"$node_known"
# ssh_to USER HOST KEY HOST_KEY KNOWN_HOSTS COMMAND: one command on a host, checking its key when one
# is given.
ssh_to() {
  local options=(-i "$3" -o BatchMode=yes -o ConnectTimeout=10)
  if [ -n "$4" ]; then
    options+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$5")
  else
    # verify_ssh_host_keys=False: no check and no record, as Terraform's own SSH steps without a
    # host_key (a lab host rebuilt at its address must not fail on a key ~/.ssh/known_hosts kept).
    options+=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null)
  fi
  # shellcheck disable=SC2029 # the remote command is composed here, with local values, on purpose
  ssh "${options[@]}" "$1@$2" "$6"
}
server() { ssh_to "$SSH_USER" "$SSH_HOST" "$SSH_KEY" "${HOST_KEY:-}" "$server_known" "$1"; }
node() {
  ssh_to "${NODE_SSH_USER:-$SSH_USER}" "$node_ip" "${NODE_SSH_KEY:-$SSH_KEY}" "${NODE_HOST_KEY:-}" "$node_known" "$1"
}

# The node's name, from its InternalIP; empty when there is no cluster to drain from or the node has
# not registered. A server without k3s has no cluster (a first apply drives the hosts' drivers before
# k3s), nor, for a drain, one whose k3s service is stopped. A k3s that runs (or, to uncordon after
# the reboot, is starting) but whose API does not answer yet is waited for, up to API_WAIT seconds.
node_name() {
  local nodes deadline=$((SECONDS + ${API_WAIT:-300}))
  local stopped=""
  [ "$mode" = drain ] && stopped='elif ! sudo systemctl is-active --quiet k3s; then echo no-k3s; '
  # shellcheck disable=SC2016 # a jsonpath, not a shell expansion
  local list='if ! command -v k3s >/dev/null; then echo no-k3s; '"$stopped"'else sudo k3s kubectl get nodes -o jsonpath='"'"'{range .items[*]}{.metadata.name}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'"'"'; fi'
  until nodes="$(server "$list" 2>"$errors")"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: node-drain: the k3s API on ${SSH_HOST} does not answer ('k3s kubectl get nodes'):" >&2
      tail -n 3 "$errors" >&2
      echo "Check 'systemctl status k3s' on ${SSH_HOST}, then re-run the apply." >&2
      exit 1
    fi
    sleep "${POLL_SECONDS:-5}"
  done
  [ "$nodes" = no-k3s ] && return 0
  awk -v ip="$node_ip" '$2 == ip { print $1 }' <<<"$nodes"
}

if [ "$mode" = drain ]; then
  set +e
  # shellcheck disable=SC2016 # $HOME expands on the node
  verdict="$(node "sudo env DRIVER_BRANCH='${DRIVER_BRANCH:?DRIVER_BRANCH is required}' DRIVER_KERNEL_MODULES='${DRIVER_KERNEL_MODULES:-open}' bash \"\$HOME/.gpu-constructs/nvidia-driver.sh\" check")"
  status=$?
  set -e
  case "$status" in
    0) echo "node-drain: ${node_ip}: the driver stays as it is; nothing to drain."; exit 0 ;;
    10) ;;
    *) echo "ERROR: node-drain: could not ask ${node_ip} whether its driver changes (exit ${status}): ${verdict}" >&2; exit 1 ;;
  esac
  name="$(node_name)"
  if [ -z "$name" ]; then
    echo "node-drain: ${node_ip}: not a node of a running cluster yet; nothing to drain (${verdict})"
    exit 0
  fi
  echo "node-drain: ${name}: the driver changes (${verdict#nvidia-driver: }); draining it first."
  flags="--ignore-daemonsets --delete-emptydir-data --timeout=${timeout}s"
  [ "${BYPASS_PDB:-0}" = 1 ] && flags+=" --disable-eviction"
  server "sudo k3s kubectl annotate node '${name}' --overwrite '${drained_key}=nvidia-driver' >/dev/null"
  if ! server "sudo k3s kubectl drain '${name}' ${flags}"; then
    server "sudo k3s kubectl uncordon '${name}' && sudo k3s kubectl annotate node '${name}' '${drained_key}-'" >/dev/null || true
    echo "ERROR: node-drain: ${name} did not drain within ${timeout}s; it is schedulable again and its driver" \
      "is unchanged. See which pods stay ('k3s kubectl get pods -A -o wide --field-selector" \
      "spec.nodeName=${name}') and their PodDisruptionBudgets, then re-run the apply." >&2
    exit 1
  fi
  echo "node-drain: ${name} drained."
  exit 0
fi

name="$(node_name)"
if [ -z "$name" ]; then
  echo "node-drain: ${node_ip}: not a node of a running cluster; nothing to uncordon."
  exit 0
fi
marked="$(server "sudo k3s kubectl get node '${name}' -o jsonpath='{.metadata.annotations.gpu-constructs\\.io/drained-for}'")"
if [ -z "$marked" ]; then
  echo "node-drain: ${name}: not drained by the stack; left as it is."
  exit 0
fi
server "sudo k3s kubectl uncordon '${name}' >/dev/null && sudo k3s kubectl annotate node '${name}' '${drained_key}-' >/dev/null"
echo "node-drain: ${name} is schedulable again."
