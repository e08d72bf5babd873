#!/usr/bin/env bash
# Write the Cloudflare API token into the Secret cert-manager's DNS-01 solver reads, on the k3s server.
# The token comes from SECRETS_FILE (NAME=value lines, deleted after reading) and reaches the API
# server on stdin: never on a command line, in a log, in the synthesized JSON or in Terraform state.
# Environment: NAMESPACE, SECRET_NAME, SECRET_KEY, SECRETS_FILE (with CLOUDFLARE_API_TOKEN),
#   WAIT_SECONDS (default 600: how long to wait for the namespace)
set -euo pipefail

token=""
if [ -n "${SECRETS_FILE:-}" ]; then
  trap 'rm -f "$SECRETS_FILE"' EXIT
  while IFS='=' read -r name value; do
    case "$name" in CLOUDFLARE_API_TOKEN) token="$value" ;; esac
  done <"$SECRETS_FILE"
fi
ns="${NAMESPACE:?NAMESPACE is required}"
secret="${SECRET_NAME:?SECRET_NAME is required}"
key="${SECRET_KEY:?SECRET_KEY is required}"
wait_seconds="${WAIT_SECONDS:-600}"

# Cloudflare API tokens are 40 letters, digits, '-' or '_'; anything else is a mistake, and could not
# be written into the YAML below safely.
if ! [[ "$token" =~ ^[A-Za-z0-9_-]{20,200}$ ]]; then
  echo "ERROR: CLOUDFLARE_API_TOKEN is missing or not a Cloudflare API token (letters, digits, - and _)." >&2
  exit 2
fi

deadline=$((SECONDS + wait_seconds))
until k3s kubectl get namespace "$ns" >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ERROR: namespace ${ns} did not appear within ${wait_seconds}s (is cert-manager installed?)." >&2
    exit 1
  fi
  sleep 5
done

printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\nstringData:\n  %s: "%s"\n' \
  "$secret" "$ns" "$key" "$token" |
  k3s kubectl apply --server-side --force-conflicts --field-manager=gpu-constructs -f - >/dev/null
# See kube-secret.sh: no copy of the token in the last-applied-configuration annotation.
k3s kubectl -n "$ns" annotate secret "$secret" kubectl.kubernetes.io/last-applied-configuration- >/dev/null
echo "cloudflare-secret: ${ns}/${secret} written."
