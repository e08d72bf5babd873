#!/usr/bin/env bash
# Copy the k3s admin kubeconfig from the server to a local file, pointed at the API's address.
# Environment: SSH_USER, SSH_HOST, SSH_KEY, HOST_KEY (optional), KUBECONFIG_OUT, WAIT_SECONDS (default 0: one try);
# optional API_SERVER (the address the kubeconfig points at, e.g. a VIP in every server's tls-san;
# default SSH_HOST) and KNOWN_HOSTS (a known-hosts file of this stack alone).
# With HOST_KEY (the key the stack gave the host, '<type> <base64>'), ssh accepts that key only,
# and with KNOWN_HOSTS too, the host's entry there is that key: the file is the stack's record.
# With KNOWN_HOSTS alone, ssh checks the key recorded there, recording it on first sight.
set -euo pipefail

user="${SSH_USER:?SSH_USER is required}"
host="${SSH_HOST:?SSH_HOST is required}"
key="${SSH_KEY:?SSH_KEY is required}"
out="${KUBECONFIG_OUT:?KUBECONFIG_OUT is required}"
api="${API_SERVER:-$host}"
known_hosts="${KNOWN_HOSTS:-}"

wait_seconds="${WAIT_SECONDS:-0}"
mkdir -p "$(dirname "$out")"
umask 077
ssh_options=(-i "$key" -o BatchMode=yes -o ConnectTimeout=10)
pinned=""
if [ -n "$known_hosts" ]; then
  mkdir -p "$(dirname "$known_hosts")"
  touch "$known_hosts"
fi
if [ -n "${HOST_KEY:-}" ]; then
  if [ -n "$known_hosts" ]; then
    # The stack's file holds the key Terraform gave the host: replace the host's entry only when
    # it differs from that key, never with whatever the host presents.
    if ! grep -qxF "${host} ${HOST_KEY}" "$known_hosts"; then
      awk -v h="$host" '$1 != h' "$known_hosts" >"${known_hosts}.new"
      printf '%s %s\n' "$host" "$HOST_KEY" >>"${known_hosts}.new"
      mv "${known_hosts}.new" "$known_hosts"
    fi
    file="$known_hosts"
  else
    pinned="$(mktemp)"
    printf '%s %s\n' "$host" "$HOST_KEY" >"$pinned"
    file="$pinned"
  fi
  ssh_options+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$file")
elif [ -n "$known_hosts" ]; then
  ssh_options+=(-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$known_hosts")
else
  ssh_options+=(-o StrictHostKeyChecking=accept-new)
fi
tmp="$(mktemp "${out}.XXXXXX")"
errors="$(mktemp "${out}.err.XXXXXX")"
trap 'rm -f "$tmp" "$errors" ${pinned:+"$pinned"}' EXIT
# With WAIT_SECONDS, keep trying while the host boots and cloud-init installs k3s.
deadline=$((SECONDS + wait_seconds))
last=""
until ssh "${ssh_options[@]}" "${user}@${host}" 'sudo cat /etc/rancher/k3s/k3s.yaml' >"$tmp" 2>"$errors"; do
  error="$(tail -n 3 "$errors")"
  if grep -q -e 'Host key verification failed' -e 'REMOTE HOST IDENTIFICATION HAS CHANGED' "$errors"; then
    echo "ERROR: ${host}'s SSH host key is not the one recorded${known_hosts:+ in ${known_hosts}}:" >&2
    echo "$error" >&2
    echo "If ${host} was rebuilt, remove its entry (ssh-keygen -R ${host}${known_hosts:+ -f ${known_hosts}})" >&2
    exit 1
  fi
  if [ "$error" != "$last" ]; then
    echo "fetch-kubeconfig: ${host}: ${error:-ssh failed with no message}" >&2
    last="$error"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ERROR: could not read /etc/rancher/k3s/k3s.yaml on ${host} over SSH" >&2
    exit 1
  fi
  sleep 10
done
# A VIP comes up once kube-vip runs on the servers: wait for it to answer before handing it on.
if [ "$api" != "$host" ]; then
  until curl -ksf --max-time 10 "https://${api}:6443/ping" >/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: the API address https://${api}:6443 does not answer (is kube-vip running on the servers?)" >&2
      exit 1
    fi
    sleep 10
  done
fi
sed -i "s#https://127.0.0.1:6443#https://${api}:6443#" "$tmp"
if ! grep -q "https://${api}:6443" "$tmp"; then
  echo "ERROR: the kubeconfig fetched from ${host} does not point at https://${api}:6443" >&2
  exit 1
fi
mv "$tmp" "$out"
echo "fetch-kubeconfig: wrote ${out} (server https://${api}:6443)"
