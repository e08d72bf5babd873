"""What Helm waits for when the helm provider installs or upgrades a release, and whether it can
become ready from what the stack runs.

Which releases wait: terraform-provider-helm (v3, Helm 3.18) defaults ``wait`` to true and passes
``wait``, ``atomic`` and ``wait_for_jobs`` to Helm's install and upgrade actions; helm v3.18
``pkg/action/install.go`` (and ``upgrade.go``) set ``Wait = Wait || Atomic``, so an atomic release
waits even with ``wait = false``. Hooks (``helm.sh/hook``) are not part of the wait.

What "ready" is: helm v3.18 ``pkg/kube/ready.go``:
- a PersistentVolumeClaim is ready only when its phase is ``Bound`` (``volumeReady``). With a
  ``WaitForFirstConsumer`` StorageClass it binds only once a pod that mounts it is scheduled; a
  CronJob's pod appears at its schedule, long after the timeout;
- a Deployment is ready when its new ReplicaSet has ``readyReplicas >= replicas - maxUnavailable``
  (``deploymentReady``; ``MaxUnavailable`` from Kubernetes' deployment util: 0 unless RollingUpdate,
  ``ResolveFenceposts`` rounds maxSurge up and maxUnavailable down and makes maxUnavailable 1 when
  both come to 0, capped at replicas). When that is 0, a rollout whose new pods never become ready
  is reported ready: an upgrade to a broken image succeeds and ``atomic`` never rolls it back;
- a StatefulSet with ``OnDelete`` or a DaemonSet with ``OnDelete`` is ready at once; a RollingUpdate
  StatefulSet needs every replica ready; a DaemonSet ``desired - maxUnavailable`` (rounded up);
- a Job only with ``wait_for_jobs`` (``checkJobs``), then when it has succeeded.
Defaults are the API server's (apps/v1 ``SetDefaults_Deployment``: replicas 1, RollingUpdate with
maxSurge and maxUnavailable 25%).

How long: the whole wait is bounded by the release's ``timeout`` (the provider's, seconds; 300 when
unset), and a wait that runs out fails the apply (and with ``atomic`` uninstalls or rolls back). A
pod that the kubelet may give ``initialDelaySeconds + periodSeconds * failureThreshold`` to pass its
startup probe before restarting it (core/v1 Probe) may take that long to become ready, after its
images are pulled and its init containers ran: the timeout must cover the startup budget plus
PULL_ALLOWANCE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tests.support.render import Release, RenderedStack

# StorageClasses a platform has before any release, with their volumeBindingMode: k3s's local-path
# (k3s manifests/local-storage.yaml: WaitForFirstConsumer, the default class)
PLATFORM_CLASSES = {
    "single-node": {"local-path": ("WaitForFirstConsumer", True)},
    "proxmox-ha": {"local-path": ("WaitForFirstConsumer", True)},
    "k3d-poc": {"local-path": ("WaitForFirstConsumer", True)},
}
POD_TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod")
PROVIDER_DEFAULT_TIMEOUT = 300
"""terraform-provider-helm's ``timeout`` default (seconds)."""
PULL_ALLOWANCE = 300
"""Seconds allowed for pulling a pod's images and running its init containers before its probes."""


@dataclass(frozen=True)
class Finding:
    stack: str
    release: str  # helm_release address
    obj: str  # Kind/namespace/name
    problem: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.stack, self.release, self.obj)


def waits(release: Release) -> bool:
    """Whether Helm waits for this release: the provider's ``wait`` (default true) or ``atomic``."""
    return bool(release.raw.get("wait", True)) or bool(release.raw.get("atomic", False))


def waits_for_jobs(release: Release) -> bool:
    return waits(release) and bool(release.raw.get("wait_for_jobs", False))


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in ((obj.get("metadata") or {}).get("annotations") or {})


def scaled(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        exact = int(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def deployment_max_unavailable(obj: dict[str, Any]) -> int:
    """deploymentutil.MaxUnavailable after API defaulting."""
    spec = obj.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = scaled(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return min(unavailable, replicas)


def deployment_ready_pods_needed(obj: dict[str, Any]) -> int:
    """How many pods of the new ReplicaSet must be ready before Helm calls the Deployment ready."""
    spec = obj.get("spec") or {}
    if spec.get("paused"):
        return 0
    return int(spec.get("replicas", 1)) - deployment_max_unavailable(obj)


def _name(release: Release, obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj['kind']}/{meta.get('namespace', release.namespace)}/{meta.get('name')}"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    found: dict[str, Any] = (spec.get("template") or {}).get("spec") or {}
    return found


def storage_classes(rendered: RenderedStack) -> dict[str, tuple[str, bool]]:
    """Every StorageClass of the stack (platform and rendered): name -> (binding mode, default)."""
    classes = dict(PLATFORM_CLASSES.get(rendered.stack, {}))
    for _, obj in rendered.objects():
        if obj.get("kind") == "StorageClass":
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            default = annotations.get("storageclass.kubernetes.io/is-default-class") == "true"
            classes[obj["metadata"]["name"]] = (obj.get("volumeBindingMode", "Immediate"), default)
    return classes


def pvc_findings(rendered: RenderedStack, release: Release) -> list[Finding]:
    classes = storage_classes(rendered)
    objects = [obj for obj in release.objects if not is_hook(obj)]
    mounted = set()
    for obj in objects:
        if obj.get("kind") in POD_TEMPLATE_KINDS:
            namespace = (obj.get("metadata") or {}).get("namespace", release.namespace)
            for volume in _pod_spec(obj).get("volumes") or []:
                if claim := (volume.get("persistentVolumeClaim") or {}).get("claimName"):
                    mounted.add((namespace, claim))
    found = []
    for obj in objects:
        if obj.get("kind") != "PersistentVolumeClaim":
            continue
        meta = obj.get("metadata") or {}
        if (meta.get("namespace", release.namespace), meta.get("name")) in mounted:
            continue
        class_name = (obj.get("spec") or {}).get("storageClassName")
        if class_name is None:
            defaults = [name for name, (_, default) in classes.items() if default]
            class_name = defaults[-1] if defaults else None
        mode = classes.get(class_name, ("unknown", False))[0] if class_name else "unknown"
        if mode != "Immediate":
            found.append(
                Finding(
                    rendered.stack,
                    release.address,
                    _name(release, obj),
                    f"Helm waits for it to be Bound, but StorageClass {class_name} binds {mode} and no "
                    "pod template of the release mounts it: the wait times out",
                )
            )
    return found


def deployment_findings(rendered: RenderedStack, release: Release) -> list[Finding]:
    found = []
    for obj in release.objects:
        if obj.get("kind") != "Deployment" or is_hook(obj):
            continue
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        if replicas > 0 and deployment_ready_pods_needed(obj) <= 0:
            found.append(
                Finding(
                    rendered.stack,
                    release.address,
                    _name(release, obj),
                    f"{replicas} replica(s) with maxUnavailable {deployment_max_unavailable(obj)}: Helm "
                    "waits for 0 ready pods, so a failed rollout is reported ready",
                )
            )
    return found


def startup_budget(obj: dict[str, Any]) -> int:
    """The longest a pod of the template may take to pass its containers' startup probes."""
    budget = 0
    for container in _pod_spec(obj).get("containers") or []:
        probe = container.get("startupProbe")
        if probe:
            budget = max(
                budget,
                int(probe.get("initialDelaySeconds", 0))
                + int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3)),
            )
    return budget


def timeout_findings(rendered: RenderedStack, release: Release) -> list[Finding]:
    timeout = int(release.raw.get("timeout", PROVIDER_DEFAULT_TIMEOUT))
    found = []
    for obj in release.objects:
        if obj.get("kind") not in POD_TEMPLATE_KINDS or is_hook(obj) or obj.get("kind") == "Job":
            continue
        budget = startup_budget(obj)
        if budget and timeout < budget + PULL_ALLOWANCE:
            found.append(
                Finding(
                    rendered.stack,
                    release.address,
                    _name(release, obj),
                    f"timeout {timeout}s is shorter than the startup probe's {budget}s plus "
                    f"{PULL_ALLOWANCE}s to pull and initialise: a slow but healthy start fails the apply",
                )
            )
    return found


def on_delete_findings(rendered: RenderedStack, release: Release) -> list[Finding]:
    """A StatefulSet or DaemonSet with ``updateStrategy: OnDelete``: the controller "will not
    automatically update the Pods ... Users must manually delete Pods" (Kubernetes StatefulSet
    docs, update strategies), so a new image or configuration is installed and never runs, and
    Helm calls it ready at once (``statefulSetReady``)."""
    found = []
    for obj in release.objects:
        if obj.get("kind") not in ("StatefulSet", "DaemonSet") or is_hook(obj):
            continue
        strategy = ((obj.get("spec") or {}).get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "OnDelete":
            found.append(
                Finding(
                    rendered.stack,
                    release.address,
                    _name(release, obj),
                    "updateStrategy OnDelete: an upgrade or configuration change never reaches the running pods",
                )
            )
    return found


def findings(rendered: RenderedStack) -> list[Finding]:
    """What a waited release of the stack waits for that cannot become ready, proves nothing, or
    may outlast the release's timeout; and workloads whose pods an upgrade never replaces."""
    found = []
    for release in rendered.releases:
        found += on_delete_findings(rendered, release)
        if waits(release):
            found += pvc_findings(rendered, release)
            found += deployment_findings(rendered, release)
            found += timeout_findings(rendered, release)
    return found
