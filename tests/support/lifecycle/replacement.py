"""Replacement reaches what lives inside: when a resource that stands for a cluster or a host
install is replaced, everything installed into it is replaced or re-run too.

Terraform's ``depends_on`` and references only order operations; a dependent is not replaced
because what it depends on was. Only ``lifecycle.replace_triggered_by`` does that: "Replaces the
resource when any of the referenced items change" (developer.hashicorp.com/terraform/language/
meta-arguments/lifecycle; hashicorp/terraform ``internal/terraform/node_resource_plan_instance.go``
``NodePlannableResourceInstance.replaceTriggered``, v1.11), and ``terraform_data``'s
``triggers_replace`` (``null_resource``'s ``triggers``) replaces it when a value it names changes,
such as the ``id`` of a replaced resource.

A helm_release installed into a replaced cluster keeps its state ("deployed", same values), so the
plan that replaces the cluster plans nothing for it and the apply leaves the new cluster without
it. On k3d, single-node and proxmox-ha the helm provider reads the same kubeconfig path; on LKE
and EKS its endpoint and credentials come from the new cluster's attributes, but that changes the
provider, not the release. At best a later refresh against the new cluster finds the release
missing and a second apply installs it, outside the order the stack defines. Either way it is a
finding unless the release is replaced with the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.support.lifecycle import graph

# What stands for the cluster (or the host install it runs on), per platform:
# (resource type, a substring of its logical id) -> why
CLUSTERS = {
    (
        "terraform_data",
        "k3d_cluster",
    ): "k3d-poc: `k3d cluster create`; replaced, the cluster is new and empty",
    ("terraform_data", "compute_cluster_"): (
        "single-node: the k3s datastore on the server host, keyed on its address. Not the k3s step: "
        "it re-runs install.sh on any settings or version change, which keeps /var/lib/rancher/k3s "
        "and the datastore (an upgrade, not a new cluster); the k3s steps are re-run with this one"
    ),
    ("proxmox_virtual_environment_vm", "vms_cp1_"): (
        "proxmox-ha: the first server, which initialises the cluster and the kubeconfig is read from; "
        "rebuilt, its cluster-init starts a new etcd cluster on the empty disk rather than rejoining "
        "cp2 and cp3 (k3s-io/k3s discussion #7070)"
    ),
    ("linode_lke_cluster", ""): "lke: the LKE cluster",
    ("aws_eks_cluster", ""): "eks-karpenter: the EKS cluster",
}
# The other servers and the workers join an existing cluster: replacing one drains its pods to the
# others, the cluster and what is installed into it survive (proxmox-ha wk-gpu*, cp2, cp3; LKE and
# EKS node pools).

# Resource types that are installed into the cluster (or run against it)
IN_CLUSTER = ("helm_release", "terraform_data", "null_resource")
IN_CLUSTER_PREFIXES = ("kubernetes_", "kubectl_")

_NAME = re.compile(r"\b([a-z][a-z0-9_]*)\.([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Finding:
    stack: str
    address: str  # installed into the cluster
    cluster: str  # replaced without it

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.stack, self.address, self.cluster)


def clusters(synthesized: dict[str, Any]) -> set[str]:
    resources = synthesized.get("resource", {})
    return {
        f"{kind}.{logical_id}"
        for (kind, part) in CLUSTERS
        for logical_id in resources.get(kind, {})
        if part in logical_id
    }


def _triggers(synthesized: dict[str, Any], body: dict[str, Any]) -> set[str]:
    """What replaces a resource: its replace_triggered_by entries (plain or ``${}`` references)
    and what terraform_data's triggers_replace or null_resource's triggers reference."""
    resources = synthesized.get("resource", {})
    found = set()
    for entry in (body.get("lifecycle") or {}).get("replace_triggered_by") or []:
        for kind, logical_id in _NAME.findall(str(entry)):
            if logical_id in resources.get(kind, {}):
                found.add(f"{kind}.{logical_id}")
    for key in ("triggers_replace", "triggers"):
        found |= graph.references(synthesized, body.get(key))
    return found


def replaced_with(synthesized: dict[str, Any], cluster: str) -> set[str]:
    """Everything Terraform replaces when ``cluster`` is replaced, transitively."""
    bodies = {
        f"{kind}.{logical_id}": body
        for kind, resources in synthesized.get("resource", {}).items()
        for logical_id, body in resources.items()
    }
    replaced = {cluster}
    changed = True
    while changed:
        changed = False
        for address, body in bodies.items():
            if address not in replaced and _triggers(synthesized, body) & replaced:
                replaced.add(address)
                changed = True
    return replaced


def _in_cluster(address: str) -> bool:
    kind = address.split(".", 1)[0]
    return kind in IN_CLUSTER or kind.startswith(IN_CLUSTER_PREFIXES)


def findings(stack: str, synthesized: dict[str, Any]) -> list[Finding]:
    found = []
    for cluster in sorted(clusters(synthesized)):
        replaced = replaced_with(synthesized, cluster)
        for kind, resources in sorted(synthesized.get("resource", {}).items()):
            for logical_id in sorted(resources):
                address = f"{kind}.{logical_id}"
                if not _in_cluster(address) or address in replaced:
                    continue
                if graph.depends_on(synthesized, address, cluster):
                    found.append(Finding(stack, address, cluster))
    return found
