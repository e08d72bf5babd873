#!/usr/bin/env bash
# Copy the k3s admin kubeconfig from the server to a local file, pointed at the server's address.
# Environment: SSH_USER, SSH_HOST, SSH_KEY, HOST_KEY (optional), KUBECONFIG_OUT, WAIT_SECONDS (default 0: one try).
set -euo pipefail

user="${SSH_USER:?SSH_USER is required}"
host="${SSH_HOST:?SSH_HOST is required}"
key="${SSH_KEY:?SSH_KEY is required}"
out="${KUBECONFIG_OUT:?KUBECONFIG_OUT is required}"

wait_seconds="${WAIT_SECONDS:-0}"
# With HOST_KEY (the host's public key, '<type> <base64>'), ssh accepts that key only; without it,
# the first key it sees (accept-new).
ssh_opts=(-i "$key" -o BatchMode=yes -o ConnectTimeout=10)
if [ -n "${HOST_KEY:-}" ]; then
  known_hosts="$(mktemp)"
  trap 'rm -f "$known_hosts"' EXIT
  printf '%s %s\n' "$host" "$HOST_KEY" >"$known_hosts"
  ssh_opts+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known_hosts")
else
  ssh_opts+=(-o StrictHostKeyChecking=accept-new)
fi
mkdir -p "$(dirname "$out")"
umask 077
tmp="$(mktemp "${out}.XXXXXX")"
# With WAIT_SECONDS, keep trying while the host boots and cloud-init installs k3s.
deadline=$((SECONDS + wait_seconds))
until ssh "${ssh_opts[@]}" "${user}@${host}" \
  'sudo cat /etc/rancher/k3s/k3s.yaml' >"$tmp" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    rm -f "$tmp"
    echo "ERROR: could not read /etc/rancher/k3s/k3s.yaml on ${host} over SSH" >&2
    exit 1
  fi
  sleep 10
done
sed -i "s#https://127.0.0.1:6443#https://${host}:6443#" "$tmp"
if ! grep -q "https://${host}:6443" "$tmp"; then
  rm -f "$tmp"
  echo "ERROR: the kubeconfig fetched from ${host} does not point at https://${host}:6443" >&2
  exit 1
fi
mv "$tmp" "$out"
echo "fetch-kubeconfig: wrote ${out}"
