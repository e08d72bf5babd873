#!/usr/bin/env bash
# Wait, bounded, until a CustomResourceDefinition exists and is Established. For CRDs that a
# controller installs on its own after its release is ready (Rancher installs Fleet and its CRDs),
# so that a release of such custom resources does not fail with "no matches for kind".
# Environment: KUBECONFIG, CRD (e.g. gitrepos.fleet.cattle.io), WAIT_SECONDS (default 900).
set -euo pipefail

crd="${CRD:?CRD is required}"
: "${KUBECONFIG:?KUBECONFIG is required}"
export KUBECONFIG
wait_seconds="${WAIT_SECONDS:-900}"
command -v kubectl >/dev/null || {
  echo "ERROR: kubectl is not on PATH; it is needed to wait for CRD ${crd}" >&2
  exit 1
}

deadline=$((SECONDS + wait_seconds))
until kubectl get crd "$crd" >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ERROR: CRD ${crd} does not exist after ${wait_seconds}s; check the controller that installs it" \
      "(kubectl get pods -A) and re-run the apply" >&2
    exit 1
  fi
  sleep 10
done
remaining=$((deadline - SECONDS))
if [ "$remaining" -lt 1 ]; then remaining=1; fi
if ! kubectl wait --for=condition=Established "crd/${crd}" --timeout="${remaining}s" >/dev/null; then
  echo "ERROR: CRD ${crd} exists but is not Established after ${wait_seconds}s" \
    "(kubectl describe crd ${crd})" >&2
  exit 1
fi
echo "wait-crd: ${crd} is Established"
