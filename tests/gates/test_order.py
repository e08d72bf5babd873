"""Release order: what a rendered object needs in the cluster comes from a release it depends on.

A StorageClass, IngressClass, CRD, namespace, ClusterIssuer, or a Secret or ServiceAccount that
another release renders must come from a release this one depends on, directly or transitively
(``depends_on`` and references both order Terraform), or from the platform, listed below with the
reason. A CRD that an operator installs on its own after its release is ready (Fleet's, by Rancher)
also needs a bounded wait until it is Established. The volumes JupyterHub's spawner creates for each
user are taken from its values; other operator-created objects (the database Secret CloudNativePG
generates) are not rendered, so not seen.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from tests.support import render
from tests.support.lifecycle.graph import strings
from tests.support.order import Platform, dependency_closure, order_problems, platform_of, provides
from tests.support.stacks import INSTANCES

# The independent record the computes' PlatformFacts are held to (test_platform_facts_agree_with_
# the_documentation_and_the_stack). k3s ships the local-path provisioner and its class `local-path`,
# marked default (https://docs.k3s.io/storage), unless its `local-storage` addon is disabled
# (k3s_disabled below), and Traefik with its IngressClass unless `traefik` is; the stacks disable
# k3s's bundled Traefik.
K3S = Platform(storage_classes=frozenset({"local-path"}), default_storage_class="local-path")
DOCUMENTED = {
    "single-node": K3S,
    "proxmox-ha": K3S,
    "k3d-poc": K3S,
    # EKS 1.30+ clusters have no default StorageClass and no IngressClass until a controller adds one.
    "eks-karpenter": Platform(),
    # LKE installs the Linode CSI driver with linode-block-storage and linode-block-storage-retain
    # (the default).
    "lke": Platform(
        storage_classes=frozenset({"linode-block-storage", "linode-block-storage-retain"}),
        default_storage_class="linode-block-storage-retain",
    ),
}


# How the stacks hand k3s its `disable` list: the host install script's DISABLE variable
# (single-node), the `disable:` list of /etc/rancher/k3s/config.yaml in cloud-init (proxmox-ha), or a
# `--disable=` k3s argument (k3d).
_DISABLE_ENV = re.compile(r"DISABLE='([^']*)'")
_DISABLE_YAML = re.compile(r"^\s*disable:\s*\n((?:\s*- [\w-]+[ \t]*\n)+)", re.MULTILINE)
_DISABLE_ARG = re.compile(r"--disable[= ]([\w-]+)")


def k3s_disabled(synthesized: dict[str, Any]) -> set[str]:
    """The bundled k3s components a stack switches off, read from what its hosts are given."""
    found: set[str] = set()
    for text in strings(synthesized.get("resource", {})):
        for match in _DISABLE_ENV.finditer(text):
            found |= set(match.group(1).split())
        for match in _DISABLE_YAML.finditer(text):
            found |= set(re.findall(r"- ([\w-]+)", match.group(1)))
        found |= set(_DISABLE_ARG.findall(text))
    return found


def documented_platform(stack: render.RenderedStack, environment: str) -> Platform:
    """The platform as DOCUMENTED says, with the k3s components the synthesized stack disables."""
    platform = DOCUMENTED[environment]
    if platform is K3S:
        disabled = k3s_disabled(stack.synthesized)
        if "local-storage" in disabled:
            platform = Platform()
        if "traefik" not in disabled:
            platform = dataclasses.replace(platform, ingress_classes=frozenset({"traefik"}))
    return platform


def test_platform_facts_agree_with_the_documentation_and_the_stack(rendered_stack):
    """The compute's PlatformFacts (what the gates read) against the independent record above and
    the synthesized stack: storage and ingress classes, the default class, the Kubernetes version."""
    stack = rendered_stack
    assert platform_of(stack) == documented_platform(stack, INSTANCES[stack.stack].environment)
    assert stack.platform is not None
    assert stack.platform.kubernetes_minor == render.kubernetes_version(stack.stack, stack.synthesized)


def test_every_release_gets_what_it_needs_from_a_dependency(rendered_stack):
    stack = rendered_stack
    assert order_problems(stack) == []


def _without_dependency(stack: render.RenderedStack, chart_or_id: str, dropped: str) -> render.RenderedStack:
    broken = copy.deepcopy(stack)
    for release in broken.releases:
        if chart_or_id in (release.chart, release.logical_id):
            body = broken.synthesized["resource"]["helm_release"][release.logical_id]
            body["depends_on"] = [d for d in body["depends_on"] if dropped not in d]
    return broken


def test_a_release_missing_its_dependency_fails(helm, upstream):
    stack = render.rendered(INSTANCES["single-node"])
    assert order_problems(stack) == []
    broken = _without_dependency(stack, "networking_cluster-issuers_002F712E", "cert-manager")
    # the Cloudflare token step depends on cert-manager too (its Secret lives in that namespace)
    broken = _without_dependency(broken, "networking_cluster-issuers_002F712E", "cloudflare-secret")
    assert any("needs crd ('cert-manager.io', 'ClusterIssuer')" in p for p in order_problems(broken))
    broken = _without_dependency(stack, "cloudnative-pg", "storage")
    broken = _without_dependency(broken, "postgres_cluster_ACE3EF20", "storage")
    # Both also wait for the monitoring release (the PodMonitor's CRD), which waits for storage.
    broken = _without_dependency(broken, "cloudnative-pg", "monitoring")
    broken = _without_dependency(broken, "postgres_cluster_ACE3EF20", "monitoring")
    assert any("needs storage_class fast-ssd" in p for p in order_problems(broken))
    broken = _without_dependency(stack, "postgres_cluster_ACE3EF20", "monitoring")
    broken = _without_dependency(broken, "postgres_cluster_ACE3EF20", "postgres_operator")
    assert any("('monitoring.coreos.com', 'PodMonitor')" in p for p in order_problems(broken))


def test_the_fleet_gitrepo_waits_for_its_crd(helm, upstream):
    stack = render.rendered(INSTANCES["proxmox-ha"])
    broken = copy.deepcopy(stack)
    for body in broken.synthesized["resource"].get("terraform_data", {}).values():
        for provisioner in body.get("provisioner", []):
            provisioner.get("local-exec", {}).get("environment", {}).pop("CRD", None)
    assert any("wait for gitrepos.fleet.cattle.io" in p for p in order_problems(broken))


def test_pod_identity_associations_exist_before_their_service_accounts_are_used(rendered_stack):
    """A release whose pods use a Pod Identity association's ServiceAccount depends on it: without
    it the pods start with no AWS credentials (and Karpenter crash-loops)."""
    stack = rendered_stack
    associations = stack.synthesized.get("resource", {}).get("aws_eks_pod_identity_association", {})
    problems = []
    for name, association in associations.items():
        account = (association["namespace"], association["service_account"])
        for release in stack.releases:
            if account in provides(release).service_accounts:
                closure = dependency_closure(stack.synthesized, release.address)
                if f"aws_eks_pod_identity_association.{name}" not in closure:
                    problems.append(
                        f"{release.address} does not depend on aws_eks_pod_identity_association.{name}"
                    )
    assert problems == []


def test_jupyterhub_user_volumes_need_their_storage_classes(helm, upstream):
    stack = render.rendered(INSTANCES["proxmox-ha"])
    # cert-manager (which JupyterHub's issuers need) comes after monitoring, which comes after NFS
    stack = _without_dependency(stack, "cert-manager", "monitoring")
    broken = _without_dependency(stack, "jupyterhub", "nfs-provisioner")
    assert any("jupyterhub" in p and "needs storage_class nfs-client" in p for p in order_problems(broken))
    broken = _without_dependency(stack, "jupyterhub", "storage_storage-classes")
    assert any("needs storage_class fast-scratch" in p for p in order_problems(broken))


def default_storage_classes(stack: render.RenderedStack) -> list[str]:
    """Every StorageClass marked default once the stack is applied: the platform's and the releases'."""
    platform = platform_of(stack)
    found = ["(platform default)"] if platform.default_storage_class else []
    for release in stack.releases:
        for obj in release.objects:
            annotations = obj.get("metadata", {}).get("annotations") or {}
            if obj.get("kind") == "StorageClass" and (
                annotations.get("storageclass.kubernetes.io/is-default-class") == "true"
            ):
                found.append(obj["metadata"]["name"])
    return found


def test_at_most_one_default_storage_class(rendered_stack):
    """With two defaults, a claim without a class gets whichever the API server picks (the newest,
    since Kubernetes 1.28): data lands on the wrong tier."""
    stack = rendered_stack
    defaults = default_storage_classes(stack)
    assert len(defaults) <= 1, f"{stack.stack}: default StorageClasses {defaults}"


def test_k3s_disable_lists_are_read_from_every_k3s_stack(helm, upstream):
    assert "local-storage" in k3s_disabled(render.rendered(INSTANCES["single-node"]).synthesized)
    assert {"traefik", "local-storage"} <= k3s_disabled(render.rendered(INSTANCES["proxmox-ha"]).synthesized)
    assert "local-storage" not in k3s_disabled(render.rendered(INSTANCES["k3d-poc"]).synthesized)


def test_a_second_default_storage_class_fails(helm, upstream):
    stack = copy.deepcopy(render.rendered(INSTANCES["proxmox-ha"]))
    assert default_storage_classes(stack) == ["nfs-client"]
    for release in stack.releases:
        for obj in release.objects:
            if obj.get("kind") == "StorageClass" and obj["metadata"]["name"] == "fast-scratch":
                obj["metadata"].setdefault("annotations", {})[
                    "storageclass.kubernetes.io/is-default-class"
                ] = "true"
    assert default_storage_classes(stack) == ["nfs-client", "fast-scratch"]
