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
from dataclasses import dataclass, field
from typing import Any

from tests import render
from tests.test_render import INSTANCES

SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


@dataclass(frozen=True)
class Platform:
    """What the cluster has before any release of the stack."""

    storage_classes: frozenset[str] = frozenset()
    default_storage_class: str | None = None
    namespaces: frozenset[str] = frozenset(SYSTEM_NAMESPACES)
    ingress_classes: frozenset[str] = frozenset()


def platform_of(stack: render.RenderedStack) -> Platform:
    """The platform as the stack's GpuCompute describes it (its PlatformFacts)."""
    facts = stack.platform
    assert facts is not None, f"{stack.stack}: rendered without its GpuCompute's platform facts"
    return Platform(
        storage_classes=frozenset(facts.storage_classes),
        default_storage_class=facts.default_storage_class,
        ingress_classes=frozenset(facts.ingress_classes),
    )


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

# CRDs that a chart's controller installs on its own once its release is ready, not in the release:
# (group, kind) -> (chart of the release that installs it, CRD name to wait for).
OPERATOR_CRDS = {("fleet.cattle.io", "GitRepo"): ("rancher", "gitrepos.fleet.cattle.io")}
# Namespaces such a controller creates: Rancher creates fleet-local and fleet-default for Fleet.
OPERATOR_NAMESPACES = {"rancher": {"fleet-local", "fleet-default", "cattle-fleet-system"}}

BUILT_IN_GROUPS = re.compile(r"^(v1|[a-z0-9.]*k8s\.io/.*|apps/.*|batch/.*|policy/.*|autoscaling/.*)$")


@dataclass
class Provides:
    storage_classes: set[str] = field(default_factory=set)
    default_storage_class: bool = False
    ingress_classes: set[str] = field(default_factory=set)
    default_ingress_class: bool = False
    crds: set[tuple[str, str]] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    secrets: set[tuple[str, str]] = field(default_factory=set)
    service_accounts: set[tuple[str, str]] = field(default_factory=set)
    cluster_issuers: set[str] = field(default_factory=set)


def provides(release: render.Release) -> Provides:
    found = Provides()
    if release.create_namespace:
        found.namespaces.add(release.namespace)
    found.namespaces |= OPERATOR_NAMESPACES.get(release.chart, set())
    for obj in release.objects:
        kind, meta = obj.get("kind"), obj.get("metadata", {})
        namespace = meta.get("namespace", release.namespace)
        if kind == "StorageClass":
            found.storage_classes.add(meta["name"])
            annotations = meta.get("annotations") or {}
            if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                found.default_storage_class = True
        elif kind == "IngressClass":
            found.ingress_classes.add(meta["name"])
            annotations = meta.get("annotations") or {}
            if annotations.get("ingressclass.kubernetes.io/is-default-class") == "true":
                found.default_ingress_class = True
        elif kind == "CustomResourceDefinition":
            found.crds.add((obj["spec"]["group"], obj["spec"]["names"]["kind"]))
        elif kind == "Namespace":
            found.namespaces.add(meta["name"])
        elif kind == "Secret":
            found.secrets.add((namespace, meta["name"]))
        elif kind == "ServiceAccount":
            found.service_accounts.add((namespace, meta["name"]))
        elif kind == "ClusterIssuer":
            found.cluster_issuers.add(meta["name"])
    return found


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [spec.get("template", {}).get("spec", {})]
    if kind == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    return []


def needs(release: render.Release, obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """What one object needs from the cluster: (what, name) pairs."""
    found: list[tuple[str, Any]] = []
    kind, meta, spec = obj.get("kind"), obj.get("metadata", {}), obj.get("spec") or {}
    namespace = meta.get("namespace") or release.namespace
    api_version = obj.get("apiVersion", "")
    if not BUILT_IN_GROUPS.match(api_version) and kind not in ("CustomResourceDefinition",):
        found.append(("crd", (api_version.split("/")[0], kind)))
    if meta.get("namespace") and kind != "Namespace":
        found.append(("namespace", meta["namespace"]))
    claims = []
    if kind == "PersistentVolumeClaim":
        claims.append(spec)
    if kind == "StatefulSet":
        claims += [t.get("spec", {}) for t in spec.get("volumeClaimTemplates", [])]
    for claim in claims:
        found.append(("storage_class", claim.get("storageClassName")))
    if api_version.startswith("postgresql.cnpg.io/") and kind == "Cluster":
        for key in ("storage", "walStorage"):
            if key in spec:
                found.append(("storage_class", spec[key].get("storageClass")))
    if kind == "Ingress":
        found.append(("ingress_class", spec.get("ingressClassName")))
        issuer = (meta.get("annotations") or {}).get("cert-manager.io/cluster-issuer")
        if issuer:
            found.append(("cluster_issuer", issuer))
    for pod in pod_specs(obj):
        if pod.get("serviceAccountName"):
            found.append(("service_account", (namespace, pod["serviceAccountName"])))
        secrets = [s["name"] for s in pod.get("imagePullSecrets") or []]
        secrets += [v["secret"]["secretName"] for v in pod.get("volumes") or [] if "secret" in v]
        for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            secrets += [e["secretRef"]["name"] for e in container.get("envFrom") or [] if "secretRef" in e]
            secrets += [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env") or []
                if "secretKeyRef" in (e.get("valueFrom") or {})
            ]
        found += [("secret", (namespace, name)) for name in secrets]
        for volume in pod.get("volumes") or []:
            if "ephemeral" in volume:
                template = volume["ephemeral"].get("volumeClaimTemplate", {}).get("spec", {})
                found.append(("storage_class", template.get("storageClassName")))
    return found


def spawned_objects(release: render.Release) -> list[dict[str, Any]]:
    """What JupyterHub's KubeSpawner creates for each user from the release's values: the home
    volume's claim and the notebook pod with its extra (ephemeral scratch) volumes."""
    if release.chart != "jupyterhub":
        return []
    storage = release.values().get("singleuser", {}).get("storage", {})
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "jupyter-user (spawned)"},
            "spec": {"containers": [], "volumes": storage.get("extraVolumes", [])},
        }
    ]
    if storage.get("type", "dynamic") == "dynamic":
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "claim-user (spawned)"},
                "spec": {"storageClassName": storage.get("dynamic", {}).get("storageClass")},
            }
        )
    return objects


def dependency_closure(synthesized: dict[str, Any], address: str) -> set[str]:
    """Every resource ``address`` depends on, by depends_on and by reference, transitively."""
    resources = {
        f"{kind}.{name}": body
        for kind, by_name in synthesized.get("resource", {}).items()
        for name, body in by_name.items()
    }

    def direct(body: dict[str, Any]) -> set[str]:
        text = str({k: v for k, v in body.items() if k != "depends_on"})
        referenced = {
            f"{m.group(1)}.{m.group(2)}" for m in re.finditer(r"\$\{([a-z0-9_]+)\.([A-Za-z0-9_-]+)", text)
        }
        return (set(body.get("depends_on", [])) | referenced) & resources.keys()

    seen: set[str] = set()
    todo = list(direct(resources[address]))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += direct(resources[current])
    return seen


def waits_for_crd(synthesized: dict[str, Any], closure: set[str], crd: str) -> bool:
    """A terraform_data in ``closure`` runs wait-crd.sh for ``crd``."""
    for name, body in synthesized.get("resource", {}).get("terraform_data", {}).items():
        if f"terraform_data.{name}" not in closure:
            continue
        for provisioner in body.get("provisioner", []):
            local = provisioner.get("local-exec", {})
            if local.get("environment", {}).get("CRD") == crd and "wait-crd" in str(local.get("command", "")):
                return True
    return False


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


# How the stacks hand k3s its `disable` list: the host install script's DISABLE variable
# (single-node), the `disable:` list of /etc/rancher/k3s/config.yaml in cloud-init (proxmox-ha), or a
# `--disable=` k3s argument (k3d).
_DISABLE_ENV = re.compile(r"DISABLE='([^']*)'")
_DISABLE_YAML = re.compile(r"^\s*disable:\s*\n((?:\s*- [\w-]+[ \t]*\n)+)", re.MULTILINE)
_DISABLE_ARG = re.compile(r"--disable[= ]([\w-]+)")


def k3s_disabled(synthesized: dict[str, Any]) -> set[str]:
    """The bundled k3s components a stack switches off, read from what its hosts are given."""
    found: set[str] = set()
    for text in _strings(synthesized.get("resource", {})):
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


def order_problems(stack: render.RenderedStack) -> list[str]:
    platform = platform_of(stack)
    by_address = {release.address: release for release in stack.releases}
    offered = {release.address: provides(release) for release in stack.releases}
    problems = []
    for release in stack.releases:
        closure = dependency_closure(stack.synthesized, release.address)
        available = [offered[address] for address in closure if address in offered]
        own = offered[release.address]
        for obj in [*release.objects, *spawned_objects(release)]:
            if "helm.sh/hook" in (obj.get("metadata", {}).get("annotations") or {}):
                continue  # hooks run inside the release's own install
            for what, name in needs(release, obj):
                where = f"{release.address}: {obj['kind']} {obj['metadata'].get('name')} needs {what} {name}"
                if what == "storage_class":
                    if name is None:
                        ok = platform.default_storage_class is not None or any(
                            p.default_storage_class for p in available
                        )
                    else:
                        ok = name in platform.storage_classes or any(
                            name in p.storage_classes for p in available
                        )
                elif what == "ingress_class" and name is None:
                    ok = any(p.default_ingress_class for p in available)
                elif what == "ingress_class":
                    ok = name in platform.ingress_classes or any(name in p.ingress_classes for p in available)
                elif what == "crd":
                    ok = any(name in p.crds for p in [own, *available])
                    if name in OPERATOR_CRDS:
                        chart, crd = OPERATOR_CRDS[name]
                        installers = {a for a in closure if a in by_address and by_address[a].chart == chart}
                        ok = bool(installers) and waits_for_crd(stack.synthesized, closure, crd)
                        if not ok:
                            where += f" (installed by the {chart} release's controller: depend on it and wait for {crd})"
                elif what == "namespace":
                    ok = name in platform.namespaces or any(name in p.namespaces for p in [own, *available])
                elif what == "cluster_issuer":
                    ok = any(name in p.cluster_issuers for p in available)
                else:  # secret / service account: only those another release renders are checked
                    attribute = "secrets" if what == "secret" else "service_accounts"
                    rendered_elsewhere = any(
                        name in getattr(p, attribute) for a, p in offered.items() if a != release.address
                    )
                    ok = (
                        not rendered_elsewhere
                        or name in getattr(own, attribute)
                        or any(name in getattr(p, attribute) for p in available)
                    )
                if not ok:
                    problems.append(where)
    return sorted(set(problems))


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
