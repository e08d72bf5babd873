#!/usr/bin/env bash
# Write a Secret on the k3s server from the NAME=value lines of SECRETS_FILE (deleted after reading):
# each line is one key of the Secret's data. The values reach the API server on stdin,
# base64-encoded: never on a command line, in a log, in the synthesized JSON or in Terraform state.
# Environment: NAMESPACE, SECRET_NAME, SECRETS_FILE, REQUIRED (space-separated key:variable pairs:
# the keys that must be present and non-empty, with the Terraform variable each comes from).
set -euo pipefail

ns="${NAMESPACE:?NAMESPACE is required}"
secret="${SECRET_NAME:?SECRET_NAME is required}"
if [ -z "${SECRETS_FILE:-}" ] || [ ! -f "$SECRETS_FILE" ]; then
  echo "ERROR: no secrets file (SECRETS_FILE) for ${ns}/${secret}." >&2
  exit 2
fi
trap 'rm -f "$SECRETS_FILE"' EXIT

declare -A values=()
data=""
# Split at the first '=' only: a secret key may contain and end with '='.
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] || continue
  key="${line%%=*}"
  if ! [[ "$key" =~ ^[-._a-zA-Z0-9]+$ ]] || [ "$key" = "$line" ]; then
    echo "ERROR: a line of the secrets file for ${ns}/${secret} is not KEY=value with a Secret key name." >&2
    exit 2
  fi
  values[$key]="${line#*=}"
  data+="  ${key}: $(printf '%s' "${values[$key]}" | base64 | tr -d '\n')"$'\n'
done <"$SECRETS_FILE"

for pair in ${REQUIRED:-}; do
  key="${pair%%:*}"
  if [ -z "${values[$key]:-}" ]; then
    echo "ERROR: ${key} of ${ns}/${secret} is empty or missing: set the Terraform variable ${pair#*:}." >&2
    exit 2
  fi
done

# The namespace may not exist yet when the release that creates it comes after this step.
printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns" | k3s kubectl apply -f - >/dev/null
# Server-side apply: a client-side apply copies the whole object, values and all, into the
# kubectl.kubernetes.io/last-applied-configuration annotation, which `kubectl describe` prints.
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\ndata:\n%s' \
  "$secret" "$ns" "$data" |
  k3s kubectl apply --server-side --force-conflicts --field-manager=gpu-constructs -f - >/dev/null
# A Secret an earlier client-side apply wrote keeps that annotation, and the API server keeps it up to
# date on every server-side apply (KEP-555, "Interoperability with client-side apply"): drop it.
# Removing an annotation the object does not have is no error (`kubectl annotate --help`).
k3s kubectl -n "$ns" annotate secret "$secret" kubectl.kubernetes.io/last-applied-configuration- >/dev/null
echo "kube-secret: ${ns}/${secret} written."
