#!/usr/bin/env bash
# What the helm provider needs to reach the k3d cluster's API, read from the cluster on every run,
# never from the kubeconfig file the create step wrote: that file keeps the admin client certificate
# k3s issued at creation, valid for 365 days, while k3s renews its certificates (those expired or
# within 90 days of expiring) only when it starts and then rewrites its kubeconfig output
# (docs.k3s.io/advanced, "Certificate Management"; k3s pkg/server/server.go, writeKubeConfig).
# `k3d kubeconfig get` copies that output from the server container (/output/kubeconfig.yaml, k3d
# v5 pkg/client/kubeconfig.go KubeconfigGet), so it holds the current certificate.
# Runs on the machine that runs Terraform, in one of two modes (the first argument):
#   ca          the external data source's program (read at every plan): prints
#               {"ca_base64": "<the cluster CA, base64>"}; the query on stdin is read and ignored.
#   credential  the provider's exec credential plugin: prints an ExecCredential
#               (client.authentication.k8s.io/v1) with the admin client certificate and key, which
#               go to the provider's memory only: never into a file, the state or a log.
# Environment: CLUSTER (the k3d cluster name), SERVER (its server container, k3d-<name>-server-0),
# LOADBALANCER (its load balancer container, k3d-<name>-serverlb, which publishes the API port),
# CERT_MIN_DAYS (default 7: a certificate that expires sooner is refused).
set -euo pipefail

mode="${1:?the mode is required: ca or credential}"
cluster="${CLUSTER:?CLUSTER is required}"
server="${SERVER:?SERVER is required}"
loadbalancer="${LOADBALANCER:?LOADBALANCER is required}"

case "$mode" in
  ca) cat >/dev/null ;;
  credential) ;;
  *) echo "ERROR: k3d-access: mode '${mode}': use ca or credential" >&2; exit 2 ;;
esac

errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT

# A stopped cluster still hands out its kubeconfig (docker copies from a stopped container), and a
# helm v3.1.1 refresh that cannot reach the API drops each release from the state
# (helm/resource_helm_release.go Read, hashicorp/terraform-provider-helm#1669): the data source,
# read before the provider refreshes anything, fails the plan with the remedy instead.
if ! running="$(docker inspect --format '{{.State.Running}}' "$server" 2>"$errors")"; then
  if ! docker info >/dev/null 2>&1; then
    echo "ERROR: k3d-access: Docker is not running, or this user may not use it (docker info failed):" \
      "start Docker, then 'k3d cluster start ${cluster}'." >&2
  else
    echo "ERROR: k3d-access: the k3d cluster ${cluster} is not on this machine (no container ${server};" \
      "'k3d cluster list' shows the clusters here)." >&2
    echo "To create it again, run in cdktf.out/stacks/<stack>: terraform apply -replace=<the cluster" \
      "step's address> (docs/k3d-poc.md). To tear the stack down, nothing is left to uninstall: remove" \
      "its resources from the state (terraform state list | xargs -r terraform state rm)." >&2
  fi
  exit 1
fi
if [ "$running" != "true" ]; then
  echo "ERROR: k3d-access: the k3d cluster ${cluster} is stopped (${server} is not running):" \
    "'k3d cluster start ${cluster}', then plan again." >&2
  exit 1
fi
# The API's host port (127.0.0.1:<api_port>, where the providers connect) is published by the load
# balancer container, not by the server (k3d v5.9.0 pkg/client/loadbalancer.go LoadbalancerPrepare
# binds KubeAPI on the serverlb node): with it stopped the server runs and the API is refused all
# the same. Docker restarts it with the others (restart policy unless-stopped), but not when its
# port is taken; `k3d cluster start` starts it (pkg/client/cluster.go ClusterStart, helpers).
if [ "$(docker inspect --format '{{.State.Running}}' "$loadbalancer" 2>/dev/null || true)" != "true" ]; then
  echo "ERROR: k3d-access: ${loadbalancer}, which publishes the API of the k3d cluster ${cluster} on" \
    "this machine, is not running: 'k3d cluster start ${cluster}' (it names a host port another" \
    "process holds), then plan again." >&2
  exit 1
fi

if ! kubeconfig="$(k3d kubeconfig get "$cluster" 2>"$errors")"; then
  echo "ERROR: k3d-access: 'k3d kubeconfig get ${cluster}' failed:" >&2
  tail -n 3 "$errors" >&2
  exit 1
fi

# field NAME: the value of the first "NAME: <base64>" line of the kubeconfig (k3d writes one cluster
# and one user).
field() {
  local value
  # A pipe, never a here-string: bash before 5.1 writes here-strings to a file in $TMPDIR.
  value="$(printf '%s\n' "$kubeconfig" | sed -n "s/^ *$1: *\([A-Za-z0-9+\/=]*\) *$/\1/p" | head -n 1)"
  if [ -z "$value" ]; then
    echo "ERROR: k3d-access: the kubeconfig of ${cluster} ('k3d kubeconfig get') has no $1" >&2
    exit 1
  fi
  printf '%s' "$value"
}
# json_pem BASE64: the PEM it encodes as a JSON string body (PEM holds no quotes nor backslashes).
json_pem() {
  printf '%s' "$1" | base64 -d | awk '{ printf "%s\\n", $0 }'
}

if [ "$mode" = ca ]; then
  # Assigned, not an argument: a command substitution's failure is lost in printf's arguments.
  ca_base64="$(field certificate-authority-data)"
fi
certificate="$(field client-certificate-data)"
min_seconds=$(( ${CERT_MIN_DAYS:-7} * 86400 ))
if ! command -v openssl >/dev/null; then
  echo "ERROR: k3d-access: openssl is required to check the k3s admin certificate's expiry" >&2
  exit 1
fi
# A cluster that has run for a year without a restart hands out an expired certificate: a 401 would
# drop the releases as above, so both modes refuse one that expires within CERT_MIN_DAYS.
if ! printf '%s' "$certificate" | base64 -d | openssl x509 -noout -checkend "$min_seconds" >/dev/null; then
  not_after="$(printf '%s' "$certificate" | base64 -d | openssl x509 -noout -enddate 2>/dev/null || true)"
  echo "ERROR: k3d-access: the k3s admin client certificate of ${cluster} expires within" \
    "${CERT_MIN_DAYS:-7} days or has expired (${not_after:-unreadable})." >&2
  echo "Restart the cluster, which makes k3s renew it: 'k3d cluster stop ${cluster} && k3d cluster" \
    "start ${cluster}'; then write kubeconfig/<stack>.yaml again for kubectl (docs/k3d-poc.md)." >&2
  exit 1
fi

case "$mode" in
  ca)
    printf '{"ca_base64": "%s"}\n' "$ca_base64"
    ;;
  credential)
    client_key="$(field client-key-data)"
    certificate_pem="$(json_pem "$certificate")"
    key_pem="$(json_pem "$client_key")"
    printf '{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": '
    printf '{"clientCertificateData": "%s", "clientKeyData": "%s"}}\n' "$certificate_pem" "$key_pem"
    ;;
esac
