#!/usr/bin/env bash
# Install or reconfigure k3s as a server or an agent, idempotently.
# The node's settings go to /etc/rancher/k3s/config.yaml; the installer runs only when the version
# or that file changes or the service is not running, so a second apply with the same settings
# changes nothing. k3s reads config.yaml only when it starts, and the installer restarts the service
# only when the binary, the unit or its env file changed (install.sh service_enable_and_start
# compares their hashes), never for config.yaml alone: INSTALL_K3S_FORCE_RESTART makes it restart.
# Environment:
#   K3S_ROLE        server | agent
#   K3S_VERSION     e.g. v1.35.5+k3s1
#   SECRETS_FILE    a file of NAME=value lines with K3S_TOKEN, the shared cluster secret; read, then
#                   deleted. Never on a command line, where sudo's log and 'ps' would show it.
#   K3S_URL         agents: https://<server>:6443
#   NODE_IP         the address this node is reached at (also a TLS SAN on the server)
#   NODE_LABELS     space-separated key=value labels
#   NODE_TAINTS     space-separated key=value:Effect taints
#   DISABLE         space-separated bundled components to switch off (server)
#   CLUSTER_CIDR, SERVICE_CIDR (server)
#   ETCD_SNAPSHOT_SCHEDULE_CRON  server: embedded etcd (cluster-init) with scheduled snapshots; with it
#                   ETCD_SNAPSHOT_RETENTION and, to send them to S3, ETCD_S3=true, ETCD_S3_ENDPOINT,
#                   ETCD_S3_BUCKET, ETCD_S3_REGION, ETCD_S3_FOLDER, ETCD_S3_INSECURE,
#                   ETCD_S3_RETENTION (what the bucket keeps; k3s' default is 5), and in SECRETS_FILE
#                   ETCD_S3_ACCESS_KEY and ETCD_S3_SECRET_KEY. They go to config.yaml (mode 0600) as
#                   the k3s settings of the same names (etcd-snapshot-schedule-cron, ...). A server
#                   that ran on SQLite moves its datastore into etcd when it restarts with cluster-init.
set -euo pipefail

if [ -n "${SECRETS_FILE:-}" ]; then
  trap 'rm -f "$SECRETS_FILE"' EXIT
  # Split at the first '=' only: a secret may contain and end with '='. The ETCD_S3_* keys are read
  # by name in render_config.
  # shellcheck disable=SC2034
  while IFS= read -r line; do
    case "${line%%=*}" in
      K3S_TOKEN) K3S_TOKEN="${line#*=}" ;;
      ETCD_S3_ACCESS_KEY) ETCD_S3_ACCESS_KEY="${line#*=}" ;;
      ETCD_S3_SECRET_KEY) ETCD_S3_SECRET_KEY="${line#*=}" ;;
    esac
  done <"$SECRETS_FILE"
fi

role="${K3S_ROLE:?K3S_ROLE is required: server or agent}"
version="${K3S_VERSION:?K3S_VERSION is required}"
: "${K3S_TOKEN:?K3S_TOKEN is required (in SECRETS_FILE)}"
node_ip="${NODE_IP:?NODE_IP is required}"
config_dir="${K3S_CONFIG_DIR:-/etc/rancher/k3s}"
config="${config_dir}/config.yaml"
service=k3s
[ "$role" = "agent" ] && service=k3s-agent

case "$role" in
  server | agent) ;;
  *) echo "ERROR: K3S_ROLE is '${role}': use server or agent" >&2; exit 2 ;;
esac
if [ "$role" = "agent" ] && [ -z "${K3S_URL:-}" ]; then
  echo "ERROR: K3S_URL is required for an agent (https://<server>:6443)" >&2
  exit 2
fi

# yaml_scalar VALUE: a number or true as it is, anything else as a double-quoted YAML string.
yaml_scalar() {
  case "$1" in
    true | false) printf '%s' "$1" ;;
    '' | *[!0-9]*)
      local escaped="${1//\\/\\\\}"
      printf '"%s"' "${escaped//\"/\\\"}"
      ;;
    *) printf '%s' "$1" ;;
  esac
}
etcd_settings=(etcd-snapshot-schedule-cron etcd-snapshot-retention etcd-s3 etcd-s3-endpoint etcd-s3-bucket
  etcd-s3-region etcd-s3-folder etcd-s3-insecure etcd-s3-retention etcd-s3-access-key etcd-s3-secret-key)

render_config() {
  echo "# Written by gpu_constructs; changes here are overwritten on the next apply."
  echo "node-ip: ${node_ip}"
  if [ "$role" = "server" ]; then
    echo "write-kubeconfig-mode: \"0600\""
    echo "tls-san:"
    echo "  - ${node_ip}"
    echo "cluster-cidr: ${CLUSTER_CIDR:-10.42.0.0/16}"
    echo "service-cidr: ${SERVICE_CIDR:-10.43.0.0/16}"
    if [ -n "${DISABLE:-}" ]; then
      echo "disable:"
      for item in $DISABLE; do echo "  - ${item}"; done
    fi
    if [ -n "${ETCD_SNAPSHOT_SCHEDULE_CRON:-}" ]; then
      echo "cluster-init: true"
      local setting variable
      for setting in "${etcd_settings[@]}"; do
        variable="$(tr 'a-z-' 'A-Z_' <<<"$setting")"
        if [ -n "${!variable:-}" ]; then
          echo "${setting}: $(yaml_scalar "${!variable}")"
        fi
      done
    fi
  fi
  if [ -n "${NODE_LABELS:-}" ]; then
    echo "node-label:"
    for item in $NODE_LABELS; do echo "  - ${item}"; done
  fi
  if [ -n "${NODE_TAINTS:-}" ]; then
    echo "node-taint:"
    for item in $NODE_TAINTS; do echo "  - ${item}"; done
  fi
}

mkdir -p "$config_dir"
new_config="$(render_config)"
old_config="$(cat "$config" 2>/dev/null || true)"
installed="$(k3s --version 2>/dev/null | sed -n 's/^k3s version \([^ ]*\).*/\1/p' || true)"

active=yes
systemctl is-active --quiet "$service" || active=no

if [ "$installed" = "$version" ] && [ "$new_config" = "$old_config" ] && [ "$active" = yes ]; then
  echo "k3s-install: ${role} ${version} already installed and running with these settings; nothing to do."
  exit 0
fi

# Created root-only: it may hold the object store's keys.
(umask 077 && printf '%s\n' "$new_config" >"$config")
chmod 600 "$config"
echo "k3s-install: installing k3s ${role} ${version} (installed now: ${installed:-none}, ${service} active: ${active})."
curl -sfL https://get.k3s.io \
  | INSTALL_K3S_VERSION="$version" INSTALL_K3S_EXEC="$role" INSTALL_K3S_FORCE_RESTART=true \
    K3S_TOKEN="$K3S_TOKEN" K3S_URL="${K3S_URL:-}" sh -

if ! systemctl is-active --quiet "$service"; then
  echo "ERROR: ${service} is not running after the install; see 'journalctl -u ${service}'." >&2
  exit 1
fi

if [ "$role" = "server" ]; then
  echo "k3s-install: waiting for the node to become Ready."
  for _ in $(seq 1 60); do
    # The STATUS column: "Ready", or "Ready,SchedulingDisabled" for a cordoned node (kubectl's
    # printNode appends ",SchedulingDisabled" when spec.unschedulable), which is Ready too.
    if k3s kubectl get nodes 2>/dev/null | awk '$2 ~ /^Ready(,|$)/ { ready = 1 } END { exit !ready }'; then
      echo "k3s-install: node Ready."
      exit 0
    fi
    sleep 5
  done
  echo "ERROR: k3s server did not become Ready within 5 minutes; see 'journalctl -u k3s'." >&2
  exit 1
fi
