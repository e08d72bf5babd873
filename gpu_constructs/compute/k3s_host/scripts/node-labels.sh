#!/usr/bin/env bash
# Give each node the labels and taints the stack declares, through the API, on every change of them.
# k3s applies --node-label and --node-taint only when a node first registers (k3s docs, "Node Labels
# and Taints"), so a changed setting never reaches a running node by config.yaml alone.
# The keys this script set are recorded in the node's annotations OWNED_LABELS and OWNED_TAINTS; a
# label or taint is removed only when it is in them and no longer declared, so what an operator or
# another controller put on the node is left alone. Runs on the k3s server (k3s kubectl).
# Environment:
#   NODE_IPS      space-separated InternalIP addresses of the nodes to manage
#   NODE_LABELS   space-separated key=value labels (may be empty)
#   NODE_TAINTS   space-separated key=value:Effect taints (may be empty)
#   WAIT_SECONDS  how long to wait for a node to register (default 300)
set -euo pipefail

node_ips="${NODE_IPS:?NODE_IPS is required}"
labels="${NODE_LABELS:-}"
taints="${NODE_TAINTS:-}"
wait_seconds="${WAIT_SECONDS:-300}"
owned_labels_key="gpu-constructs.io/labels"
owned_taints_key="gpu-constructs.io/taints"

kubectl() { k3s kubectl "$@"; }

node_named() {
  # "<name> <InternalIP>" per node
  kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' \
    | awk -v ip="$1" '$2 == ip { print $1 }'
}

# Whether the "key=value" lines on stdin have a line with key $1 (and effect $2, for taints).
has_label() { awk -F= -v k="$1" '$1 == k { found = 1 } END { exit !found }'; }
has_taint() {
  awk -v k="$1" -v e="$2" '{ key = $0; sub(/=.*/, "", key); effect = $0; sub(/.*:/, "", effect) }
    key == k && effect == e { found = 1 } END { exit !found }'
}

# "key" of each declared label, "key:Effect" of each declared taint: what identifies them.
declared_label_keys=""
for item in $labels; do declared_label_keys+="${item%%=*},"; done
declared_taint_ids=""
for item in $taints; do declared_taint_ids+="${item%%=*}:${item##*:},"; done

for ip in $node_ips; do
  deadline=$((SECONDS + wait_seconds))
  until name="$(node_named "$ip")" && [ -n "$name" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: no node with InternalIP ${ip} registered within ${wait_seconds}s; see 'journalctl -u k3s-agent' on it." >&2
      exit 1
    fi
    sleep 5
  done

  owned_labels="$(kubectl get node "$name" -o "jsonpath={.metadata.annotations.gpu-constructs\.io/labels}")"
  owned_taints="$(kubectl get node "$name" -o "jsonpath={.metadata.annotations.gpu-constructs\.io/taints}")"
  # shellcheck disable=SC2016 # a Go template, not a shell expansion
  current_labels="$(kubectl get node "$name" -o 'go-template={{range $k, $v := .metadata.labels}}{{$k}}={{$v}}{{"\n"}}{{end}}')"
  current_taints="$(kubectl get node "$name" -o 'go-template={{range .spec.taints}}{{.key}}={{.value}}:{{.effect}}{{"\n"}}{{end}}')"
  changed=0

  for key in ${owned_labels//,/ }; do
    case ",${declared_label_keys}" in *",${key},"*) continue ;; esac
    if has_label "$key" <<<"$current_labels"; then
      kubectl label node "$name" "${key}-" >/dev/null
      echo "node-labels: ${name}: removed label ${key}"
      changed=1
    fi
  done
  for item in $labels; do
    if ! grep -qxF "$item" <<<"$current_labels"; then
      kubectl label node "$name" --overwrite "$item" >/dev/null
      echo "node-labels: ${name}: label ${item}"
      changed=1
    fi
  done

  for id in ${owned_taints//,/ }; do
    case ",${declared_taint_ids}" in *",${id},"*) continue ;; esac
    key="${id%%:*}"
    effect="${id##*:}"
    if has_taint "$key" "$effect" <<<"$current_taints"; then
      kubectl taint node "$name" "${key}:${effect}-" >/dev/null
      echo "node-labels: ${name}: removed taint ${id}"
      changed=1
    fi
  done
  for item in $taints; do
    if ! grep -qxF "$item" <<<"$current_taints"; then
      kubectl taint node "$name" --overwrite "$item" >/dev/null
      echo "node-labels: ${name}: taint ${item}"
      changed=1
    fi
  done

  if [ "$owned_labels" != "$declared_label_keys" ] || [ "$owned_taints" != "$declared_taint_ids" ]; then
    kubectl annotate node "$name" --overwrite \
      "${owned_labels_key}=${declared_label_keys}" "${owned_taints_key}=${declared_taint_ids}" >/dev/null
    changed=1
  fi
  [ "$changed" = 1 ] || echo "node-labels: ${name}: labels and taints as declared; nothing to do."
done
