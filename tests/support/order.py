"""The release-order model of tests/gates/test_order.py: what a rendered object needs in the cluster,
what each release provides, and what the platform has before any release."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.support import render

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
