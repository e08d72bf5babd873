#!/usr/bin/env bash
# Unseal every sealed Vault server pod, asking for unseal keys: typed into Vault's own hidden prompt,
# never echoed, stored or put on a command line. Run it from a terminal that reaches the cluster:
#   kubectl get configmap -n vault vault-operations -o jsonpath='{.data.unseal\.sh}' > unseal.sh
#   bash unseal.sh
# Environment:
#   VAULT_NAMESPACE  namespace of the Vault release (vault)
#   KUBECTL          the kubectl command (kubectl; "sudo k3s kubectl" on a k3s server)
set -euo pipefail

ns="${VAULT_NAMESPACE:-vault}"
read -r -a kubectl <<<"${KUBECTL:-kubectl}"

if [ ! -t 0 ]; then
  echo "unseal: run this from a terminal; Vault asks for each key at a hidden prompt." >&2
  exit 1
fi

pods="$("${kubectl[@]}" get pods -n "$ns" -l app.kubernetes.io/name=vault,component=server \
  -o jsonpath='{.items[*].metadata.name}')"
if [ -z "$pods" ]; then
  echo "unseal: no Vault server pods in namespace ${ns}." >&2
  exit 1
fi

sealed() { # 'vault status' exits 2 when sealed, so read its output, not its exit code
  local status
  status="$("${kubectl[@]}" exec -n "$ns" "$1" -- vault status -format=json 2>/dev/null || true)"
  [[ "$status" == *'"sealed": true'* ]]
}

for pod in $pods; do
  while sealed "$pod"; do
    echo "unseal: ${pod} is sealed; enter one unseal key (Ctrl-C to stop)."
    "${kubectl[@]}" exec -it -n "$ns" "$pod" -- vault operator unseal || true
  done
  echo "unseal: ${pod} is unsealed."
done
