#!/usr/bin/env bash
# Write the object store's key pair into the Secret CloudNativePG's Barman Cloud reads, on the k3s
# server. The keys come from SECRETS_FILE (NAME=value lines, deleted after reading) and reach the API
# server on stdin, base64-encoded: never on a command line, in a log, in the synthesized JSON or in
# Terraform state.
# Environment: NAMESPACE, SECRET_NAME, REGION, SECRETS_FILE (with ACCESS_KEY_ID and SECRET_ACCESS_KEY)
set -euo pipefail

access_key_id=""
secret_access_key=""
if [ -n "${SECRETS_FILE:-}" ]; then
  trap 'rm -f "$SECRETS_FILE"' EXIT
  # Split at the first '=' only: a secret key may contain and end with '=' (read with IFS='=' would
  # drop a trailing one).
  while IFS= read -r line; do
    case "${line%%=*}" in
      ACCESS_KEY_ID) access_key_id="${line#*=}" ;;
      SECRET_ACCESS_KEY) secret_access_key="${line#*=}" ;;
    esac
  done <"$SECRETS_FILE"
fi
ns="${NAMESPACE:?NAMESPACE is required}"
secret="${SECRET_NAME:?SECRET_NAME is required}"
region="${REGION:?REGION is required}"

if [ -z "$access_key_id" ] || [ -z "$secret_access_key" ]; then
  echo "ERROR: ACCESS_KEY_ID or SECRET_ACCESS_KEY is missing (backup_access_key_id, backup_secret_access_key)." >&2
  exit 2
fi

b64() { printf '%s' "$1" | base64 | tr -d '\n'; }

# The namespace may not exist yet: the database's release creates it after this step.
k3s kubectl create namespace "$ns" --dry-run=client -o yaml | k3s kubectl apply -f - >/dev/null
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\ndata:\n  ACCESS_KEY_ID: %s\n  ACCESS_SECRET_KEY: %s\n  REGION: %s\n' \
  "$secret" "$ns" "$(b64 "$access_key_id")" "$(b64 "$secret_access_key")" "$(b64 "$region")" |
  k3s kubectl apply -f - >/dev/null
echo "object-store-secret: ${ns}/${secret} written."
