"""CRDs a chart ships in ``crds/``: Helm installs them on the first install and never again.

Helm 3 reads a chart's ``crds/`` directory (and that of every subchart it enables) only when the
release is installed: "There is no support at this time for upgrading or deleting CRDs using
Helm" (helm.sh/docs/chart_best_practices/custom_resource_definitions, "Some caveats and
explanations"), and the helm provider upgrades through the same action. A chart bump then runs
the new controller against the old schemas: the API server prunes the fields they do not know and
CRDs added since are never created.

So every release whose chart (or an enabled subchart) ships ``crds/`` must have one of these:

- ``skip_crds`` set, with every one of those CRDs rendered as a template (which Helm upgrades) by a
  release it depends on: Karpenter's CRDs from the karpenter-crd chart;
- the chart's own upgrade mechanism turned on, seen as the pre-upgrade hook Job it renders
  (:data:`UPGRADE_HOOKS`);
- a step it depends on that applies the chart's CRDs at the pinned version, keyed on that version
  (:func:`crd_steps`): ``helm show crds <chart> --version <pin>`` then ``kubectl apply --server-side``;
- or an entry in the test's list of releases for which this is safe, with the reason.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from tests.support import render
from tests.support.lifecycle import graph

# chart -> (the values switch, the name of the pre-upgrade hook Job it renders, which applies the
# chart's CRDs before the upgrade)
UPGRADE_HOOKS = {
    # kube-prometheus-stack 88.5.3 charts/crds/templates/upgrade/job.yaml: `if .Values.upgradeJob
    # .enabled`, a pre-install,pre-upgrade,pre-rollback hook that runs `kubectl apply --server-side`
    # on the CRDs of the chart's version (the ConfigMap of files/crds.bz2 beside it).
    "kube-prometheus-stack": ("crds.upgradeJob.enabled", "kube-prometheus-stack-crds-upgrade"),
    # gpu-operator v26.7.0 templates/upgrade_crd.yaml: `if .Values.operator.upgradeCRD` (default
    # true), a pre-upgrade hook running the operator image's `manage-crds apply` on its CRDs, and on
    # node-feature-discovery's when nfd.enabled.
    "gpu-operator": ("operator.upgradeCRD", "gpu-operator-upgrade-crd"),
}


def _crd_names(path: Path) -> set[str]:
    """The CRDs in a YAML file, or in the YAML files under a directory."""
    names = set()
    for file in [path] if path.is_file() else sorted(path.rglob("*.yaml")):
        for obj in render.parse_objects(file.read_text(encoding="utf-8")):
            if obj.get("kind") == "CustomResourceDefinition":
                names.add(obj["metadata"]["name"])
    return names


def _crd_dirs(chart_dir: Path) -> list[Path]:
    """The ``crds/`` directories of a chart and of all its subcharts: each beside its Chart.yaml
    (kube-prometheus-stack's subchart is itself called crds, with its own crds/ inside)."""
    return [d for d in sorted(chart_dir.rglob("crds")) if d.is_dir() and (d.parent / "Chart.yaml").is_file()]


def chart_crd_files(chart_dir: Path) -> set[str]:
    """The CRDs in the ``crds/`` directories of a chart and of all its subcharts, enabled or not."""
    return set().union(*(_crd_names(d) for d in _crd_dirs(chart_dir)))


def _crds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o.get("kind") == "CustomResourceDefinition"}


def shipped_crds(release: render.Release, kube_version: str, helm: str) -> set[str]:
    """The CRDs Helm installs from ``crds/`` on this release's first install (the chart's and those
    of the subcharts its values enable), whether or not the release skips them."""
    if release.is_manifests_chart or not release.chart_dir.is_dir():
        return set()
    in_files = chart_crd_files(release.chart_dir)
    if not in_files:
        return set()
    objects = release.objects
    if release.raw.get("skip_crds"):
        unskipped = dataclasses.replace(release, raw={**release.raw, "skip_crds": False})
        objects = render.parse_objects(render.helm_template(unskipped, kube_version, [], helm))
    return _crds(objects) & in_files


def templated_crds(release: render.Release, shipped: set[str]) -> set[str]:
    """The CRDs a release renders as templates (upgraded with the release)."""
    rendered = _crds(release.objects)
    return rendered if release.raw.get("skip_crds") else rendered - shipped


def upgrade_hook(release: render.Release) -> set[str]:
    """The CRDs the release's chart's CRD upgrade hook (:data:`UPGRADE_HOOKS`) applies, as it is
    rendered: none when the hook is off. kube-prometheus-stack's applies all of its crds
    subchart's (its ConfigMap holds them compressed); the GPU Operator's the files named by its
    ``--filepath`` arguments."""
    if release.chart not in UPGRADE_HOOKS:
        return set()
    _, name = UPGRADE_HOOKS[release.chart]
    jobs = [
        o
        for o in release.objects
        if o.get("kind") == "Job"
        and o["metadata"]["name"] == name
        and "pre-upgrade" in (o["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    ]
    covered: set[str] = set()
    for job in jobs:
        args = [a for c in job["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
        files = {Path(a.removeprefix("--filepath=")).name for a in args if a.startswith("--filepath=")}
        for directory in _crd_dirs(release.chart_dir):
            for path in sorted(directory.glob("*.yaml")):
                if not files or path.name in files:
                    covered |= _crd_names(path)
    return covered


def crd_steps(synthesized: dict[str, Any], release: render.Release) -> list[str]:
    """The ``terraform_data`` steps that apply this release's chart's CRDs at its pinned version:
    a local-exec running ``helm show crds <chart> --version <version>`` and ``kubectl apply
    --server-side`` on what it printed, replaced (so run again) when the version changes."""
    found = []
    for logical_id, body in synthesized.get("resource", {}).get("terraform_data", {}).items():
        commands = " ".join(
            p["local-exec"].get("command", "")
            for p in body.get("provisioner", [])
            if "local-exec" in p and p["local-exec"].get("when", "create") == "create"
        )
        show = re.search(
            rf"helm show crds {re.escape(release.chart)} --version {re.escape(str(release.version))}\b",
            commands,
        )
        apply = re.search(r"\bkubectl\b[^|;&]* apply --server-side\b", commands)
        if show and apply and str(release.version) in str(body.get("triggers_replace", "")):
            found.append(f"terraform_data.{logical_id}")
    return found


@dataclasses.dataclass
class Finding:
    release: render.Release
    shipped: set[str]
    """The CRDs Helm installs from crds/ on the first install."""
    upgraded: dict[str, str]
    """Those of them something upgrades -> how (skip_crds + the release, the hook, the step)."""

    @property
    def left(self) -> set[str]:
        return self.shipped - set(self.upgraded)


def findings(stack: render.RenderedStack, helm: str) -> list[Finding]:
    """Every release of the stack that ships CRDs in ``crds/``, and what upgrades each of them."""
    shipped = {r.logical_id: shipped_crds(r, stack.kube_version, helm) for r in stack.releases}
    found = []
    for release in stack.releases:
        crds = shipped[release.logical_id]
        if not crds:
            continue
        upgraded: dict[str, str] = {}
        if release.raw.get("skip_crds"):
            for other in stack.releases:
                if other is not release and graph.depends_on(
                    stack.synthesized, release.address, other.address
                ):
                    for crd in templated_crds(other, shipped[other.logical_id]) & crds:
                        upgraded[crd] = f"skip_crds, templates of {other.address}"
        for crd in upgrade_hook(release) & crds:
            upgraded.setdefault(crd, f"the chart's upgrade hook ({UPGRADE_HOOKS[release.chart][0]})")
        for step in crd_steps(stack.synthesized, release):
            if graph.depends_on(stack.synthesized, release.address, step):
                for crd in crds:
                    upgraded.setdefault(crd, f"the step {step}")
        found.append(Finding(release, crds, upgraded))
    return found


# chart -> CRD API group -> why leaving that group's crds/ CRDs at their first-install version is
# safe. Strict both ways: a group listed here that no stack leaves un-upgraded fails too.
SAFE = {
    "external-dns": {
        "externaldns.k8s.io": "DNSEndpoint is read only by the crd source; the stack runs "
        "`sources: [ingress]` and creates no DNSEndpoint",
    },
    "gpu-operator": {
        "resource.nvidia.com": "ComputeDomain(Clique)s belong to NVIDIA's DRA driver for multi-node "
        "NVLink, which no stack installs; the operator's own CRDs and NFD's are its upgrade hook's",
    },
    "traefik": {
        group: "Traefik serves Ingress objects only: its kubernetesCRD and kubernetesGateway providers "
        "are off (networking.TRAEFIK_PROVIDERS, checked below), so nothing reads these kinds"
        for group in ("traefik.io", "hub.traefik.io", "gateway.networking.k8s.io")
    },
}
# chart -> group -> why it is not upgraded yet and is not safe: reported, to be fixed where the
# release is built.
OPEN: dict[str, dict[str, str]] = {}


def group_of(crd: str) -> str:
    return crd.split(".", 1)[1]


def problems(stack: render.RenderedStack, helm: str) -> tuple[list[str], set[tuple[str, str]]]:
    """What the gate refuses in one stack, and the (chart, group) pairs it found left alone."""
    found = []
    left: set[tuple[str, str]] = set()
    for finding in findings(stack, helm):
        chart = finding.release.chart
        for crd in sorted(finding.left):
            left.add((chart, group_of(crd)))
            if group_of(crd) not in {**SAFE.get(chart, {}), **OPEN.get(chart, {})}:
                found.append(
                    f"{stack.stack}/{finding.release.address} ({chart}): {crd} comes from the chart's "
                    "crds/, which Helm installs once and never upgrades; set skip_crds with a release "
                    "that renders it as a template, turn on the chart's CRD upgrade hook, add a step "
                    "applying `helm show crds` at the pinned version, or list it in SAFE with the reason"
                )
    return found, left
