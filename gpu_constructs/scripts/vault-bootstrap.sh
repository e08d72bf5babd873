#!/usr/bin/env bash
# Initialize, unseal and configure the in-cluster Vault from the k3s server, idempotently.
#
# With SEAL=awskms Vault unseals itself with its AWS KMS key after every restart, and 'operator init'
# makes recovery keys (for rekey and generate-root; they cannot decrypt anything). With SEAL=shamir it
# makes one unseal key, and a restarted server stays sealed until someone unseals it. The keys and the
# root token are written to INIT_FILE on this host (root only, mode 0600) and nowhere else: not to
# Terraform state, not to the cluster. Move them to an offline safe after the first run; with the file
# gone, a Shamir-sealed Vault is unsealed by hand after a restart (docs/single-node.md#vault).
# Environment:
#   VAULT_NAMESPACE  namespace of the Vault release (vault)
#   VAULT_PODS       space-separated pod names (vault-0, or vault-0 vault-1 vault-2 with raft)
#   ENVIRONMENT      dev | staging | production: the <env> in the secret paths
#   APP_NAMESPACE, APP_SERVICE_ACCOUNT  bound to the application's Kubernetes auth role
#   POLICY_NAME      name of the application's policy and role (ffe-backend)
#   SEAL             awskms (auto-unseal, configured in the servers' configuration) or shamir (default)
#   DB_ROLE          the database engine's connection and role (ffe), mounted at database/<env>
#   DB_NAMESPACE, DB_CLUSTER, DB_NAME, DB_OWNER  the CloudNativePG cluster to connect it to, its
#                    database and the role owning it; without DB_CLUSTER the engine is left unconnected
#   INIT_FILE        default /root/vault-init.json
#   WAIT_SECONDS     how long each pod may take to run and answer 'vault status' (default 600)
#   POLL_SECONDS     pause between two 'vault status' tries (default 5)
#   SNAPSHOT_SERVICE_ACCOUNT  the raft snapshot CronJob's service account in VAULT_NAMESPACE: gets the
#                    policy and Kubernetes auth role vault-snapshot, allowed to read a raft snapshot only
#
# A server still running on file storage (a standalone Vault installed before its storage became
# raft) is restarted once: the chart's update strategy (OnDelete) leaves a running pod on its old
# configuration, and the new pod's init container (vault-raft-migrate.sh) copies the file storage into
# raft storage before the server starts.
#
# The init file is never overwritten: 'vault operator init' writes to a temporary file that is moved
# into place only when it succeeded, and only after Vault answered that it is uninitialized.
#
# The database connection uses a PostgreSQL role "vault" (CREATEROLE, admin of DB_OWNER) created
# through psql in the primary's pod. Its password is generated here, handed to Vault on stdin and
# rotated by Vault at once, so only Vault knows it. Vault's credentials are members of DB_OWNER. The
# role is re-created when the database lacks it (a re-created database), and gets a new password when
# Vault cannot log in with its own (a restore with an older one).
#
# The application's secret secret/<env>/app is created when absent with ENVIRONMENT=<env> and never
# overwritten: the application's own keys are the user's to add (vault kv patch).
set -euo pipefail

ns="${VAULT_NAMESPACE:?VAULT_NAMESPACE is required}"
pods="${VAULT_PODS:?VAULT_PODS is required}"
env_name="${ENVIRONMENT:?ENVIRONMENT is required}"
app_ns="${APP_NAMESPACE:?APP_NAMESPACE is required}"
app_sa="${APP_SERVICE_ACCOUNT:?APP_SERVICE_ACCOUNT is required}"
policy="${POLICY_NAME:?POLICY_NAME is required}"
db_role="${DB_ROLE:?DB_ROLE is required}"
db_mount="database/${env_name}"
init_file="${INIT_FILE:-/root/vault-init.json}"
leader="${pods%% *}"
seal="${SEAL:-shamir}"
case "$seal" in
  awskms | shamir) ;;
  *) echo "ERROR: SEAL=${seal}: use awskms or shamir." >&2; exit 2 ;;
esac

kubectl_() { k3s kubectl "$@"; }
# The vault CLI inside a Vault pod. The token travels as the first line of stdin, never on a command
# line, where the host's and the pod's process lists would show it.
# shellcheck disable=SC2016 # expanded by the shell in the pod
in_pod='IFS= read -r token; VAULT_TOKEN="$token" exec vault "$@"'
vault_in() { # vault_in POD ARGS...: followed on stdin by this function's stdin (values given as "-")
  local pod="$1"
  shift
  { printf '%s\n' "${VAULT_TOKEN:-}" && cat; } | kubectl_ exec -i -n "$ns" "$pod" -- sh -c "$in_pod" vault "$@"
}
vault_() { vault_in "$@" </dev/null; } # vault_ POD ARGS...: nothing on stdin but the token
json_field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$init_file"; }
# The first Shamir unseal key; none after an auto-unseal init, whose '"unseal_keys_b64": [],' opens no list.
unseal_key() { sed -n '/"unseal_keys_b64": \[$/,/]/{/^ *"\([^"]*\)",\{0,1\}$/{s//\1/p;q;};}' "$init_file"; }
wait_seconds="${WAIT_SECONDS:-600}"
poll_seconds="${POLL_SECONDS:-5}"

# status_field POD FIELD: a field of 'vault status'. The command exits 2 when sealed, so its output is
# read, not its exit code. Prints nothing while Vault does not answer.
status_field() {
  vault_ "$1" status -format=json 2>/dev/null | sed -n "s/^  \"$2\": \([a-z]*\),\{0,1\}$/\1/p" || true
}
# answered_status POD FIELD: like status_field, but waits (bounded) until Vault answers. A brief
# failure must not read as "uninitialized": that would start a second 'operator init'.
answered_status() {
  local value deadline=$((SECONDS + wait_seconds))
  until value="$(status_field "$1" "$2")" && [ -n "$value" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: ${1} did not answer 'vault status' within ${wait_seconds}s; see" >&2
      echo "'k3s kubectl logs -n ${ns} ${1}'. Nothing was changed; re-run the apply when it answers." >&2
      exit 1
    fi
    sleep "$poll_seconds"
  done
  printf '%s\n' "$value"
}
wait_running() { # wait_running POD: fails clearly when the pod never runs (Pending, for example)
  # The release is installed without waiting, so the StatefulSet may not have made the pod yet, and
  # 'kubectl wait' fails at once on a pod that does not exist.
  local deadline=$((SECONDS + wait_seconds))
  until kubectl_ get -n "$ns" "pod/$1" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: Vault pod ${1} was not created within ${wait_seconds}s; see" >&2
      echo "'k3s kubectl describe statefulset -n ${ns} vault'." >&2
      exit 1
    fi
    sleep "$poll_seconds"
  done
  if ! kubectl_ wait -n "$ns" --for=jsonpath='{.status.phase}'=Running "pod/$1" --timeout="${wait_seconds}s" >/dev/null; then
    echo "ERROR: Vault pod ${1} is not Running after ${wait_seconds}s. With more Vault replicas than" >&2
    echo "nodes, the chart's required anti-affinity leaves the extra pods Pending; see" >&2
    echo "'k3s kubectl describe pod -n ${ns} ${1}'." >&2
    exit 1
  fi
}

for pod in $pods; do
  echo "vault-bootstrap: waiting for ${pod} to run."
  wait_running "$pod"
done

# Assigned first: under 'set -e' a failed wait inside "$(...)" then stops the script.
initialized="$(answered_status "$leader" initialized)"
if [ "$initialized" != "true" ]; then
  if [ -s "$init_file" ]; then
    echo "ERROR: ${leader} reports an uninitialized Vault, but ${init_file} exists and may hold the only" >&2
    echo "unseal key of an earlier one. It is left untouched: if this Vault was really recreated, move the" >&2
    echo "file to a safe place and re-run." >&2
    exit 1
  fi
  if [ "$seal" = awskms ]; then
    echo "vault-bootstrap: initializing Vault (auto-unseal with AWS KMS; 1 recovery key share)."
    shares=(-recovery-shares=1 -recovery-threshold=1)
  else
    echo "vault-bootstrap: initializing Vault (1 key share; re-key for production, docs/single-node.md#vault)."
    shares=(-key-shares=1 -key-threshold=1)
  fi
  umask 077
  tmp="$(mktemp "${init_file}.XXXXXX")"
  if ! vault_ "$leader" operator init "${shares[@]}" -format=json >"$tmp" \
    || ! grep -q '"root_token"' "$tmp"; then
    rm -f "$tmp"
    echo "ERROR: 'vault operator init' failed on ${leader}; ${init_file} was not written." >&2
    exit 1
  fi
  chmod 600 "$tmp"
  mv "$tmp" "$init_file"
fi

if [ ! -s "$init_file" ]; then
  echo "vault-bootstrap: Vault is initialized but ${init_file} is absent: unseal and configure by hand." >&2
  exit 0
fi

# storage_type POD: the storage 'vault status' reports (file, raft); empty while Vault does not answer.
storage_type() {
  vault_ "$1" status -format=json 2>/dev/null | sed -n 's/^  "storage_type": "\([a-z]*\)",\{0,1\}$/\1/p' || true
}
# Only here, with the key to unseal it again at hand (or the KMS seal), is a server restarted.
if [ "$(storage_type "$leader")" = file ]; then
  echo "vault-bootstrap: ${leader} still runs on file storage; restarting it to copy its data into raft storage."
  uid="$(kubectl_ get -n "$ns" "pod/${leader}" -o jsonpath='{.metadata.uid}')"
  kubectl_ delete -n "$ns" "pod/${leader}" --wait=true >/dev/null
  deadline=$((SECONDS + wait_seconds))
  until [ "$(kubectl_ get -n "$ns" "pod/${leader}" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)" != "$uid" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "ERROR: ${leader} was not re-created within ${wait_seconds}s." >&2; exit 1; }
    sleep "$poll_seconds"
  done
  wait_running "$leader"
  if [ "$(answered_status "$leader" initialized)" != true ] || [ "$(storage_type "$leader")" != raft ]; then
    echo "ERROR: ${leader} did not come back initialized on raft storage; its file storage is kept in" >&2
    echo "/vault/data/file-storage. See 'k3s kubectl logs -n ${ns} ${leader} -c raft-migrate'." >&2
    exit 1
  fi
fi

# auto_unsealed POD KEY: waits (bounded) until an auto-unsealing server has unsealed itself. A server
# whose data is still sealed with Shamir keys (initialized before the seal was configured) asks for a
# seal migration: it is given the Shamir key with migrate=true, after which that key is a recovery key.
auto_unsealed() {
  local deadline=$((SECONDS + wait_seconds))
  while [ "$(answered_status "$1" sealed)" = true ]; do
    if [ "$(status_field "$1" migration)" = true ] && [ -n "$2" ]; then
      echo "vault-bootstrap: migrating ${1} from its Shamir key to the AWS KMS seal."
      printf '%s' "$2" | vault_in "$1" write sys/unseal key=- migrate=true >/dev/null
    elif [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: ${1} is still sealed ${wait_seconds}s after starting, although it unseals itself with AWS" >&2
      echo "KMS. Check the key id and region, the IAM user's kms:Encrypt, kms:Decrypt and kms:DescribeKey" >&2
      echo "on the key, the Secret ${ns}/vault-seal and 'k3s kubectl logs -n ${ns} ${1}'." >&2
      exit 1
    fi
    sleep "$poll_seconds"
  done
}

key="$(unseal_key)"

# After a change of the release (image, seal, configuration), the StatefulSet (updateStrategy
# RollingUpdate) replaces its pods from the highest ordinal down, each only once the one replaced
# before it is Ready, that is unsealed (StatefulSet docs, "Rolling Updates"). A replaced server comes
# up sealed with a Shamir seal, or asks for a seal migration after a switch to AWS KMS: each is
# waited for, newest first, and unsealed or migrated, so the rollout finishes within this step.
statefulset="${leader%-*}"
revision="$(kubectl_ get -n "$ns" "statefulset/${statefulset}" -o 'jsonpath={.status.updateRevision}' 2>/dev/null || true)"
if [ -n "$revision" ]; then
  for pod in $(tr ' ' '\n' <<<"$pods" | sort -r -t- -k2 -n); do
    deadline=$((SECONDS + wait_seconds))
    until [ "$(kubectl_ get -n "$ns" "pod/${pod}" -o 'jsonpath={.metadata.labels.controller-revision-hash}' 2>/dev/null || true)" = "$revision" ]; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "ERROR: Vault pod ${pod} does not run the StatefulSet's revision ${revision} after ${wait_seconds}s;" >&2
        echo "see 'k3s kubectl rollout status -n ${ns} statefulset/${statefulset}'." >&2
        exit 1
      fi
      sleep "$poll_seconds"
    done
    wait_running "$pod"
    [ "$(answered_status "$pod" initialized)" = true ] || continue
    if [ "$(answered_status "$pod" sealed)" = true ]; then
      if [ "$seal" = awskms ]; then
        auto_unsealed "$pod" "$key"
      else
        echo "vault-bootstrap: unsealing ${pod} (replaced by the rollout)."
        printf '%s' "$key" | vault_in "$pod" write sys/unseal key=- >/dev/null
      fi
    fi
    kubectl_ wait -n "$ns" --for=condition=Ready "pod/${pod}" --timeout="${wait_seconds}s" >/dev/null
  done
fi

for pod in $pods; do
  pod_initialized="$(answered_status "$pod" initialized)"
  if [ "$pod" != "$leader" ] && [ "$pod_initialized" != "true" ]; then
    if ! vault_ "$pod" operator raft join "http://${leader}.vault-internal:8200" >/dev/null; then
      echo "ERROR: ${pod} could not join the raft cluster of ${leader}; see 'k3s kubectl logs -n ${ns} ${pod}'." >&2
      exit 1
    fi
  fi
  sealed="$(answered_status "$pod" sealed)"
  if [ "$sealed" = "true" ] && [ "$seal" = awskms ]; then
    auto_unsealed "$pod" "$key"
  elif [ "$sealed" = "true" ]; then
    echo "vault-bootstrap: unsealing ${pod}."
    # On stdin, not the command line, where the host's and the pod's process lists would show it.
    printf '%s' "$key" | vault_in "$pod" write sys/unseal key=- >/dev/null
  fi
done

# Unsealed servers pass the chart's readiness probe; one that does not is not serving.
for pod in $pods; do
  if ! kubectl_ wait -n "$ns" --for=condition=Ready "pod/${pod}" --timeout="${wait_seconds}s" >/dev/null; then
    echo "ERROR: Vault pod ${pod} is not Ready ${wait_seconds}s after unsealing; see" >&2
    echo "'k3s kubectl describe pod -n ${ns} ${pod}' and 'k3s kubectl logs -n ${ns} ${pod}'." >&2
    exit 1
  fi
done

VAULT_TOKEN="$(json_field root_token)"
export VAULT_TOKEN

# Audit device: every request and response (secrets HMAC'd) written to the server's stdout, where the
# kubelet keeps it in the container log and rotates it (KubeletConfiguration containerLogMaxSize 10Mi,
# containerLogMaxFiles 5 by default, which k3s keeps) and any log collector can ship it. A file on the
# chart's audit volume is never rotated by Vault (it only reopens it on SIGHUP) and, once the volume
# is full, Vault refuses every request it cannot audit. The file device of an earlier version is
# disabled after stdout is enabled, so requests are audited throughout; its old file stays on the
# audit volume. 'vault audit list' exits 2 when no device is enabled; the list is read whole.
audit_devices="$(vault_ "$leader" audit list -format=json 2>/dev/null || true)"
if [[ "$audit_devices" != *'"stdout/"'* ]]; then
  echo "vault-bootstrap: enabling the audit device on the server's stdout (rotated by the kubelet)."
  vault_ "$leader" audit enable -path=stdout file file_path=stdout >/dev/null
fi
if [[ "$audit_devices" == *'"file/"'* ]]; then
  echo "vault-bootstrap: disabling the file audit device on the audit volume (never rotated)."
  vault_ "$leader" audit disable file/ >/dev/null
fi

# Lists are read whole before matching: 'grep -q' stops reading at the first match, and under
# pipefail the writer's SIGPIPE would read as "not there" and enable it a second time.
enable_engine() { # enable_engine TYPE PATH [OPTIONS...]
  local mounts
  mounts="$(vault_ "$leader" secrets list -format=json)"
  if [[ "$mounts" != *"\"$2/\""* ]]; then
    vault_ "$leader" secrets enable -path="$2" "${@:3}" "$1" >/dev/null
  fi
}
enable_engine kv-v2 secret
enable_engine database "$db_mount"
enable_engine pki pki -max-lease-ttl=87600h
enable_engine transit transit

auth_methods="$(vault_ "$leader" auth list -format=json)"
if [[ "$auth_methods" != *'"kubernetes/"'* ]]; then
  vault_ "$leader" auth enable kubernetes >/dev/null
fi
vault_ "$leader" write auth/kubernetes/config kubernetes_host="https://kubernetes.default.svc:443" >/dev/null

vault_ "$leader" write -f "transit/keys/ffe" >/dev/null
# The pki/ engine issues nothing without a CA: generate its root once (the key never leaves Vault).
# 'vault list' exits 2 with "No value found" while the mount has no issuer; the list is read whole.
issuers="$(vault_ "$leader" list -format=json pki/issuers 2>/dev/null || true)"
if [[ "$issuers" != *'"'* ]]; then
  echo "vault-bootstrap: generating the root CA of pki/ (ffe internal CA, 10 years)."
  vault_ "$leader" write pki/root/generate/internal common_name="ffe internal CA (${env_name})" \
    issuer_name=ffe-root ttl=87600h >/dev/null
fi
vault_ "$leader" write pki/config/urls \
  issuing_certificates="http://vault.${ns}.svc:8200/v1/pki/ca" \
  crl_distribution_points="http://vault.${ns}.svc:8200/v1/pki/crl" >/dev/null
vault_ "$leader" write "pki/roles/ffe" allowed_domains="${app_ns}.svc" allow_subdomains=true max_ttl=720h >/dev/null

policy_hcl="path \"secret/data/${env_name}/app\" { capabilities = [\"read\"] }
path \"${db_mount}/creds/${db_role}\" { capabilities = [\"read\"] }
path \"pki/issue/ffe\" { capabilities = [\"create\", \"update\"] }
path \"transit/encrypt/ffe\" { capabilities = [\"update\"] }
path \"transit/decrypt/ffe\" { capabilities = [\"update\"] }"
printf '%s\n' "$policy_hcl" | vault_in "$leader" policy write "$policy" - >/dev/null

vault_ "$leader" write "auth/kubernetes/role/${policy}" \
  bound_service_account_names="$app_sa" \
  bound_service_account_namespaces="$app_ns" \
  policies="$policy" ttl=1h >/dev/null

# The raft snapshot CronJob: reading a snapshot is all its token can do, for 15 minutes.
if [ -n "${SNAPSHOT_SERVICE_ACCOUNT:-}" ]; then
  printf '%s\n' 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }' |
    vault_in "$leader" policy write vault-snapshot - >/dev/null
  vault_ "$leader" write auth/kubernetes/role/vault-snapshot \
    bound_service_account_names="$SNAPSHOT_SERVICE_ACCOUNT" \
    bound_service_account_namespaces="$ns" \
    policies=vault-snapshot ttl=15m max_ttl=15m >/dev/null
fi

# The application's secret. The Vault agent's init container renders secret/data/<env>/app before
# the application starts and keeps retrying while it does not exist, so the pod would never start.
# Written once, when absent, with the only value the stack owns (ENVIRONMENT); values only the user
# knows are never invented: the user adds them with 'vault kv patch'. -cas=0 writes only a secret
# that has no version yet, so a value the user wrote is never overwritten, even by a racing run.
app_secret="secret/${env_name}/app"
if ! vault_ "$leader" kv metadata get -format=json "$app_secret" >/dev/null 2>&1; then
  vault_ "$leader" kv put -cas=0 "$app_secret" ENVIRONMENT="$env_name" >/dev/null
  echo "vault-bootstrap: created ${app_secret} with ENVIRONMENT only; add the application's own values with"
  echo "  vault kv patch ${app_secret} KEY=value"
fi

if [ -n "${DB_CLUSTER:-}" ]; then
  db_ns="${DB_NAMESPACE:?DB_NAMESPACE is required with DB_CLUSTER}"
  db_name="${DB_NAME:?DB_NAME is required with DB_CLUSTER}"
  db_owner="${DB_OWNER:?DB_OWNER is required with DB_CLUSTER}"
  # The connection is (re)made when Vault has none, and also when the database lacks the role
  # "vault": a re-created database (a new Cluster, a restore into a fresh one) has no such role, and
  # Vault's configuration alone would then fail every credential request.
  connected=yes
  vault_ "$leader" read -format=json "${db_mount}/config/${db_role}" >/dev/null 2>&1 || connected=no
  kubectl_ wait -n "$db_ns" --for=condition=Ready "clusters.postgresql.cnpg.io/${DB_CLUSTER}" --timeout=900s >/dev/null
  primary="$(kubectl_ get pods -n "$db_ns" -l "cnpg.io/cluster=${DB_CLUSTER},cnpg.io/instanceRole=primary" \
    -o jsonpath='{.items[0].metadata.name}')"
  if [ -z "$primary" ]; then
    echo "vault-bootstrap: no primary pod of ${db_ns}/${DB_CLUSTER}." >&2
    exit 1
  fi
  psql_() { kubectl_ exec -i -n "$db_ns" "$primary" -c postgres -- psql -v ON_ERROR_STOP=1 -q -d "$db_name" "$@"; }
  # Assigned first: under 'set -e' a failed psql then stops the script instead of reading as "absent".
  role_exists="$(psql_ -tA -c "SELECT 1 FROM pg_roles WHERE rolname = 'vault'" </dev/null)"
  connect_database() { # a new password for the role "vault", given to Vault on stdin
    echo "vault-bootstrap: connecting ${db_mount} to PostgreSQL ${db_ns}/${DB_CLUSTER}."
    local password
    password="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
    printf '%s\n' \
      "SELECT 'CREATE ROLE vault' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault') \\gexec" \
      "ALTER ROLE vault WITH LOGIN CREATEROLE PASSWORD '${password}';" \
      "GRANT \"${db_owner}\" TO vault WITH ADMIN OPTION;" |
      psql_ >/dev/null
    printf '%s' "$password" | vault_in "$leader" write "${db_mount}/config/${db_role}" \
      plugin_name=postgresql-database-plugin \
      connection_url="postgresql://{{username}}:{{password}}@${DB_CLUSTER}-rw.${db_ns}.svc:5432/${db_name}?sslmode=require" \
      username=vault password=- allowed_roles="$db_role" >/dev/null
  }
  if [ "$connected" = no ]; then
    connect_database
  elif [ "$role_exists" != 1 ]; then
    echo "vault-bootstrap: ${db_ns}/${DB_CLUSTER} has no role vault (a re-created database); re-creating it."
    connect_database
  fi
  # Every run: the password that passed through this host is replaced by one only Vault knows. When
  # Vault cannot log in with the one it has (a database restored with an older password of "vault"),
  # the role gets a new password first.
  if ! vault_ "$leader" write -f "${db_mount}/rotate-root/${db_role}" >/dev/null; then
    echo "vault-bootstrap: Vault cannot log in to ${db_ns}/${DB_CLUSTER} as vault; setting a new password."
    connect_database
    vault_ "$leader" write -f "${db_mount}/rotate-root/${db_role}" >/dev/null
  fi
  vault_ "$leader" write "${db_mount}/roles/${db_role}" db_name="$db_role" \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE \"${db_owner}\";" \
    default_ttl=1h max_ttl=24h >/dev/null
fi

echo "vault-bootstrap: Vault initialized, unsealed and configured for ${app_ns}/${app_sa} (${env_name})."
