#!/usr/bin/env bash
# Initialize, unseal and configure the in-cluster Vault from the k3s server, idempotently.
#
# The unseal keys and root token are written to INIT_FILE on this host (root only, mode 0600) and
# nowhere else: not to Terraform state, not to the cluster. Move them to an offline safe after the
# first run; with the file gone, unsealing after a restart is manual (see the README).
# Environment:
#   VAULT_NAMESPACE  namespace of the Vault release (vault)
#   VAULT_PODS       space-separated pod names (vault-0, or vault-0 vault-1 vault-2 with raft)
#   ENVIRONMENT      dev | staging | production: the <env> in the secret paths
#   APP_NAMESPACE, APP_SERVICE_ACCOUNT  bound to the application's Kubernetes auth role
#   POLICY_NAME      name of the application's policy and role (ffe-backend)
#   DB_ROLE          the database engine's connection and role (ffe), mounted at database/<env>
#   DB_NAMESPACE, DB_CLUSTER, DB_NAME, DB_OWNER  the CloudNativePG cluster to connect it to, its
#                    database and the role owning it; without DB_CLUSTER the engine is left unconnected
#   INIT_FILE        default /root/vault-init.json
#
# The database connection uses a PostgreSQL role "vault" (CREATEROLE, admin of DB_OWNER) created
# through psql in the primary's pod. Its password is generated here, handed to Vault on stdin and
# rotated by Vault at once, so only Vault knows it. Vault's credentials are members of DB_OWNER.
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
status_field() { # status_field POD FIELD: a field of 'vault status' (exit code 2 means sealed)
  vault_ "$1" status -format=json 2>/dev/null | sed -n "s/^  \"$2\": \([a-z]*\),\{0,1\}$/\1/p" || true
}
json_field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$init_file"; }
unseal_key() { sed -n '/"unseal_keys_b64"/,/]/{/^ *"\([^"]*\)",\{0,1\}$/{s//\1/p;q;};}' "$init_file"; }

echo "vault-bootstrap: waiting for ${leader} to run."
kubectl_ wait -n "$ns" --for=jsonpath='{.status.phase}'=Running "pod/${leader}" --timeout=600s >/dev/null

if [ "$(status_field "$leader" initialized)" != "true" ]; then
  echo "vault-bootstrap: initializing Vault (1 key share; see the README to re-key for production)."
  umask 077
  vault_ "$leader" operator init -key-shares=1 -key-threshold=1 -format=json >"$init_file"
  chmod 600 "$init_file"
fi

if [ ! -s "$init_file" ]; then
  echo "vault-bootstrap: Vault is initialized but ${init_file} is absent: unseal and configure by hand." >&2
  exit 0
fi

key="$(unseal_key)"
for pod in $pods; do
  if [ "$pod" != "$leader" ] && [ "$(status_field "$pod" initialized)" != "true" ]; then
    vault_ "$pod" operator raft join "http://${leader}.vault-internal:8200" >/dev/null || true
  fi
  if [ "$(status_field "$pod" sealed)" = "true" ]; then
    echo "vault-bootstrap: unsealing ${pod}."
    # On stdin, not the command line, where the host's and the pod's process lists would show it.
    printf '%s' "$key" | vault_in "$pod" write sys/unseal key=- >/dev/null
  fi
done

VAULT_TOKEN="$(json_field root_token)"
export VAULT_TOKEN

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

if [ -n "${DB_CLUSTER:-}" ]; then
  db_ns="${DB_NAMESPACE:?DB_NAMESPACE is required with DB_CLUSTER}"
  db_name="${DB_NAME:?DB_NAME is required with DB_CLUSTER}"
  db_owner="${DB_OWNER:?DB_OWNER is required with DB_CLUSTER}"
  if ! vault_ "$leader" read -format=json "${db_mount}/config/${db_role}" >/dev/null 2>&1; then
    echo "vault-bootstrap: connecting ${db_mount} to PostgreSQL ${db_ns}/${DB_CLUSTER}."
    kubectl_ wait -n "$db_ns" --for=condition=Ready "clusters.postgresql.cnpg.io/${DB_CLUSTER}" --timeout=900s >/dev/null
    primary="$(kubectl_ get pods -n "$db_ns" -l "cnpg.io/cluster=${DB_CLUSTER},cnpg.io/instanceRole=primary" \
      -o jsonpath='{.items[0].metadata.name}')"
    if [ -z "$primary" ]; then
      echo "vault-bootstrap: no primary pod of ${db_ns}/${DB_CLUSTER}." >&2
      exit 1
    fi
    password="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
    printf '%s\n' \
      "SELECT 'CREATE ROLE vault' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault') \\gexec" \
      "ALTER ROLE vault WITH LOGIN CREATEROLE PASSWORD '${password}';" \
      "GRANT \"${db_owner}\" TO vault WITH ADMIN OPTION;" |
      kubectl_ exec -i -n "$db_ns" "$primary" -c postgres -- psql -v ON_ERROR_STOP=1 -q -d "$db_name" >/dev/null
    printf '%s' "$password" | vault_in "$leader" write "${db_mount}/config/${db_role}" \
      plugin_name=postgresql-database-plugin \
      connection_url="postgresql://{{username}}:{{password}}@${DB_CLUSTER}-rw.${db_ns}.svc:5432/${db_name}?sslmode=require" \
      username=vault password=- allowed_roles="$db_role" >/dev/null
  fi
  # Every run: the password that passed through this host is replaced by one only Vault knows.
  vault_ "$leader" write -f "${db_mount}/rotate-root/${db_role}" >/dev/null
  vault_ "$leader" write "${db_mount}/roles/${db_role}" db_name="$db_role" \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE \"${db_owner}\";" \
    default_ttl=1h max_ttl=24h >/dev/null
fi

echo "vault-bootstrap: Vault initialized, unsealed and configured for ${app_ns}/${app_sa} (${env_name})."
