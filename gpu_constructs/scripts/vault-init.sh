#!/usr/bin/env bash
# Initialize Vault by hand (for stacks with vault_bootstrap=False) and join the other raft members.
# The unseal keys and the root token are printed on this terminal only: hand each key to its holder,
# then unseal every pod with unseal.sh from the same ConfigMap.
#   kubectl get configmap -n vault vault-operations -o jsonpath='{.data.init\.sh}' > init.sh
#   KEY_SHARES=5 KEY_THRESHOLD=3 bash init.sh
# Environment:
#   VAULT_NAMESPACE  namespace of the Vault release (vault)
#   KUBECTL          the kubectl command (kubectl; "sudo k3s kubectl" on a k3s server)
#   KEY_SHARES, KEY_THRESHOLD  how many keys to make and how many unseal (5 and 3)
set -euo pipefail

ns="${VAULT_NAMESPACE:-vault}"
read -r -a kubectl <<<"${KUBECTL:-kubectl}"
shares="${KEY_SHARES:-5}"
threshold="${KEY_THRESHOLD:-3}"

if ! [[ "$shares" =~ ^[1-9][0-9]*$ && "$threshold" =~ ^[1-9][0-9]*$ ]] || [ "$threshold" -gt "$shares" ]; then
  echo "init: KEY_SHARES=${shares} KEY_THRESHOLD=${threshold}: use whole numbers, threshold <= shares." >&2
  exit 1
fi
if [ "$shares" -gt 1 ] && [ "$threshold" -lt 2 ]; then
  echo "init: KEY_THRESHOLD=1 with ${shares} shares lets any one holder unseal; use at least 2." >&2
  exit 1
fi

pods="$("${kubectl[@]}" get pods -n "$ns" -l app.kubernetes.io/name=vault,component=server \
  -o jsonpath='{.items[*].metadata.name}')"
if [ -z "$pods" ]; then
  echo "init: no Vault server pods in namespace ${ns}." >&2
  exit 1
fi
leader="${pods%% *}"

status="$("${kubectl[@]}" exec -n "$ns" "$leader" -- vault status -format=json 2>/dev/null || true)"
if [[ "$status" == *'"initialized": true'* ]]; then
  echo "init: Vault is already initialized; nothing to do. Unseal with unseal.sh."
  exit 0
fi

# An auto-unsealing Vault (its status names the seal, e.g. awskms) makes recovery keys instead.
if [[ "$status" == *'"type": "shamir"'* || -z "$status" ]]; then
  split=(-key-shares="$shares" -key-threshold="$threshold")
  kind="keys"
else
  split=(-recovery-shares="$shares" -recovery-threshold="$threshold")
  kind="recovery keys"
fi
"${kubectl[@]}" exec -n "$ns" "$leader" -- vault operator init "${split[@]}"
for pod in $pods; do
  if [ "$pod" != "$leader" ]; then
    "${kubectl[@]}" exec -n "$ns" "$pod" -- vault operator raft join "http://${leader}.vault-internal:8200" >/dev/null
  fi
done
if [ "$kind" = keys ]; then
  echo "init: initialized; now unseal every pod with unseal.sh (${threshold} keys each)."
else
  echo "init: initialized; the servers unseal themselves. Hand each of the ${kind} to its holder."
fi
