#!/usr/bin/env bash
# Configure UFW: deny inbound by default, open the public ports, the admin ports to the admin
# networks only, and let cluster nodes and the pod/service networks reach what k3s needs. Every rule
# is idempotent (ufw skips existing rules) and carries the comment "gpu-constructs <port> from
# <source>": a rule with such a comment that the settings no longer declare (a narrowed ADMIN_CIDRS,
# a dropped port) is deleted, and rules without it, an operator's own, are left alone.
# Environment:
#   PUBLIC_PORTS   space-separated port/proto open to everyone, e.g. "80/tcp 443/tcp"
#   ADMIN_PORTS    space-separated port/proto open to ADMIN_CIDRS only, e.g. "22/tcp 6443/tcp"
#   ADMIN_CIDRS    space-separated networks of the administrators and the machine that runs Terraform
#   CLUSTER_PORTS  space-separated port/proto open to TRUSTED_CIDRS only (kubelet, flannel, etcd)
#   TRUSTED_CIDRS  space-separated networks: the cluster nodes and the pod and service CIDRs
set -euo pipefail

# Every apt-get call waits for the dpkg lock (unattended-upgrades holds it for minutes after a boot;
# DPkg::Lock::Timeout, apt >= 1.9.11) and keeps locally changed conffiles without asking.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

public_ports="${PUBLIC_PORTS:?PUBLIC_PORTS is required}"
admin_ports="${ADMIN_PORTS:-}"
admin_cidrs="${ADMIN_CIDRS:-}"
cluster_ports="${CLUSTER_PORTS:-}"
trusted="${TRUSTED_CIDRS:-}"

if ! command -v ufw >/dev/null 2>&1; then
  apt_get update -qq
  apt_get install -y -qq ufw >/dev/null
fi

ufw default deny incoming >/dev/null
ufw default allow outgoing >/dev/null
# Pods route through the host; k3s docs require forwarded traffic to be allowed.
ufw default allow routed >/dev/null

declared=""
# allow PORT/PROTO SOURCE: one rule, tagged with its identity.
allow() {
  local id="gpu-constructs $1 from $2"
  declared+="${id}"$'\n'
  if [ "$2" = any ]; then
    ufw allow "$1" comment "$id" >/dev/null
  else
    ufw allow proto "${1#*/}" from "$2" to any port "${1%/*}" comment "$id" >/dev/null
  fi
}

for port in $public_ports; do
  allow "$port" any
done
for cidr in $admin_cidrs; do
  for port in $admin_ports; do
    allow "$port" "$cidr"
  done
done
# An admin port that is not public must not stay open to everyone from an earlier configuration
# (rules of earlier versions carry no comment). The admin rules above are in place first, so an SSH
# session from an admin network survives.
for port in $admin_ports; do
  case " $public_ports " in
    *" $port "*) ;;
    *) ufw delete allow "$port" >/dev/null 2>&1 || true ;;
  esac
done
for cidr in $trusted; do
  for port in $cluster_ports; do
    allow "$port" "$cidr"
  done
done

ufw --force enable >/dev/null
# Rules of this stack that are no longer declared, highest number first (numbers shift on delete).
# 'ufw status numbered' lists each as "[ N] <to> <action> <from> # <comment>", IPv6 twins included.
stale="$(ufw status numbered | sed -n 's/^\[ *\([0-9]*\)\].*# \(gpu-constructs .*\)$/\1 \2/p' | while read -r number id; do
  grep -qxF "$id" <<<"$declared" || echo "$number"
done | sort -rn)"
for number in $stale; do
  echo "firewall: deleting rule ${number}, no longer declared: $(ufw status numbered | grep "^\[ *${number}\]")"
  ufw --force delete "$number" >/dev/null
done
echo "firewall: public ${public_ports}; ${admin_ports:-no admin ports} from ${admin_cidrs:-nobody};" \
  "${cluster_ports:-no cluster ports} from ${trusted:-nobody}."
ufw status numbered
