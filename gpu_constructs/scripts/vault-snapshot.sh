#!/bin/sh
# A snapshot of Vault's raft storage, sent to the object store; the two halves of one CronJob pod.
#
#   vault-snapshot.sh save    (in the Vault image) logs in with the pod's service account token
#                             (Kubernetes auth role ROLE, whose policy reads sys/storage/raft/snapshot
#                             only) and writes the snapshot to SNAPSHOT_DIR.
#   vault-snapshot.sh upload  (in the AWS CLI image) uploads it as <PREFIX>/vault-<UTC time>.snap and
#                             deletes the snapshots under PREFIX older than RETENTION_DAYS, never the
#                             one just uploaded. Keys not named like a snapshot are never touched.
#
# The Vault token lives in this process's environment only; the object store's keys come from the
# environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, set from a Secret), never from the command
# line. A snapshot is encrypted by Vault's root key, which the seal protects: it restores only into a
# Vault that can unseal with the same seal (the KMS key must still exist).
# Environment:
#   save:   VAULT_ADDR, ROLE (vault-snapshot), SNAPSHOT_DIR, TOKEN_FILE (the service account token)
#   upload: SNAPSHOT_DIR, BUCKET, PREFIX, ENDPOINT (S3 API URL), AWS_DEFAULT_REGION, RETENTION_DAYS,
#           ENCRYPTION (AES256, aws:kms or empty), NOW (seconds since the epoch; default: now)
set -eu

dir="${SNAPSHOT_DIR:?SNAPSHOT_DIR is required}"

save() {
  role="${ROLE:-vault-snapshot}"
  token_file="${TOKEN_FILE:-/var/run/secrets/kubernetes.io/serviceaccount/token}"
  : "${VAULT_ADDR:?VAULT_ADDR is required}"
  # jwt=@file: the CLI reads the token from the file, so it is on no command line.
  VAULT_TOKEN="$(vault write -field=token auth/kubernetes/login role="$role" jwt=@"$token_file")"
  export VAULT_TOKEN
  vault operator raft snapshot save "${dir}/vault.snap.partial"
  mv "${dir}/vault.snap.partial" "${dir}/vault.snap"
  echo "vault-snapshot: snapshot saved ($(wc -c <"${dir}/vault.snap") bytes)."
}

upload() {
  bucket="${BUCKET:?BUCKET is required}"
  prefix="${PREFIX:?PREFIX is required}"
  endpoint="${ENDPOINT:?ENDPOINT is required}"
  days="${RETENTION_DAYS:?RETENTION_DAYS is required}"
  case "$days" in '' | *[!0-9]* | 0)
    echo "ERROR: RETENTION_DAYS=${days}: give a whole number of days above 0." >&2
    exit 2
    ;;
  esac
  if [ ! -s "${dir}/vault.snap" ]; then
    echo "ERROR: no snapshot in ${dir}: the save step did not finish." >&2
    exit 1
  fi
  now="${NOW:-$(date -u +%s)}"
  key="${prefix}/vault-$(date -u -d "@${now}" +%Y%m%dT%H%M%SZ).snap"
  set -- --endpoint-url "$endpoint"
  sse=""
  [ -z "${ENCRYPTION:-}" ] || sse="--sse=${ENCRYPTION}"
  # shellcheck disable=SC2086 # sse is one word or none
  aws "$@" s3 cp --only-show-errors $sse "${dir}/vault.snap" "s3://${bucket}/${key}"
  echo "vault-snapshot: uploaded s3://${bucket}/${key}."

  cutoff="$(date -u -d "@$((now - days * 86400))" +%Y%m%d%H%M%S)"
  aws "$@" s3api list-objects-v2 --bucket "$bucket" --prefix "${prefix}/vault-" \
    --query 'Contents[].Key' --output text | tr '\t' '\n' >"${dir}/keys"
  while IFS= read -r old; do
    name="${old#"${prefix}"/}"
    # vault-YYYYmmddTHHMMSSZ.snap only; anything else under the prefix is someone else's.
    stamp="$(printf '%s\n' "$name" | sed -n 's/^vault-\([0-9]\{8\}\)T\([0-9]\{6\}\)Z\.snap$/\1\2/p')"
    [ -n "$stamp" ] && [ "$old" != "$key" ] || continue
    if [ "$stamp" -lt "$cutoff" ]; then
      aws "$@" s3 rm --only-show-errors "s3://${bucket}/${old}"
      echo "vault-snapshot: deleted ${old} (older than ${days} days)."
    fi
  done <"${dir}/keys"
}

case "${1:-}" in
  save) save ;;
  upload) upload ;;
  *)
    echo "usage: vault-snapshot.sh save|upload" >&2
    exit 2
    ;;
esac
