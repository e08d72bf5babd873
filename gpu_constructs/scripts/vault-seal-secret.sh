#!/usr/bin/env bash
# Write the credentials of Vault's AWS KMS auto-unseal into the Secret the Vault servers read their
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from, on the k3s server, before Vault starts.
# The keys come from SECRETS_FILE (NAME=value lines, deleted after reading) and reach the API server
# on stdin: never on a command line, in a log, in the synthesized JSON or in Terraform state.
# Environment: NAMESPACE, SECRET_NAME, SECRETS_FILE (with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
set -euo pipefail

access_key=""
secret_key=""
if [ -n "${SECRETS_FILE:-}" ]; then
  trap 'rm -f "$SECRETS_FILE"' EXIT
  while IFS='=' read -r name value; do
    case "$name" in
      AWS_ACCESS_KEY_ID) access_key="$value" ;;
      AWS_SECRET_ACCESS_KEY) secret_key="$value" ;;
    esac
  done <"$SECRETS_FILE"
fi
ns="${NAMESPACE:?NAMESPACE is required}"
secret="${SECRET_NAME:?SECRET_NAME is required}"

# AWS access key ids are 16-128 upper-case letters and digits, secret keys 40 base64-like characters;
# anything else is a mistake, and could not be written into the YAML below safely.
if ! [[ "$access_key" =~ ^[A-Z0-9]{16,128}$ ]]; then
  echo "ERROR: AWS_ACCESS_KEY_ID (vault_kms_access_key_id) is missing or not an AWS access key id." >&2
  exit 2
fi
if ! [[ "$secret_key" =~ ^[A-Za-z0-9/+=]{30,128}$ ]]; then
  echo "ERROR: AWS_SECRET_ACCESS_KEY (vault_kms_secret_access_key) is missing or not an AWS secret key." >&2
  exit 2
fi

# The namespace may not exist yet: the Secret is written before the Vault release that creates it.
printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns" | k3s kubectl apply -f - >/dev/null
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\nstringData:\n  AWS_ACCESS_KEY_ID: "%s"\n  AWS_SECRET_ACCESS_KEY: "%s"\n' \
  "$secret" "$ns" "$access_key" "$secret_key" | k3s kubectl apply -f - >/dev/null
echo "vault-seal-secret: ${ns}/${secret} written."
