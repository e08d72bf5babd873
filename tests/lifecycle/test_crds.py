"""Gate: every CRD a release's chart ships in ``crds/`` is upgraded with the chart, or listed in
``SAFE`` (tests/support/lifecycle/crds.py) with the reason that is safe (the module says why Helm
alone never upgrades them)."""

from __future__ import annotations

import copy
import json

import cdktf
import pytest

from tests.support import render
from tests.support.lifecycle import crds
from tests.support.lifecycle.crds import OPEN, SAFE, group_of, problems
from tests.support.stacks import INSTANCES


def test_every_crd_in_a_charts_crds_directory_is_upgraded_or_listed(helm, upstream):
    refused: list[str] = []
    left: set[tuple[str, str]] = set()
    for name in sorted(INSTANCES):
        found, stack_left = problems(render.rendered(INSTANCES[name]), helm)
        refused += found
        left |= stack_left
    assert not refused, "\n".join(refused)
    listed = {(c, g) for table in (SAFE, OPEN) for c, groups in table.items() for g in groups}
    assert listed - left == set(), f"listed but upgraded or gone, remove from the list: {listed - left}"


def test_the_gate_knows_each_way_the_stacks_upgrade_crds(helm, upstream):
    """Karpenter by its CRD chart, kube-prometheus-stack and the GPU Operator by their hooks, the
    Load Balancer Controller by its step: each seen, and each covering all it ships."""
    eks = render.rendered(INSTANCES["eks-karpenter"])
    by_chart = {f.release.chart: f for f in crds.findings(eks, helm)}
    assert set(by_chart["karpenter"].upgraded) == by_chart["karpenter"].shipped
    assert {"nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"} <= by_chart["karpenter"].shipped
    assert not by_chart["kube-prometheus-stack"].left
    assert "prometheuses.monitoring.coreos.com" in by_chart["kube-prometheus-stack"].shipped
    lbc = by_chart["aws-load-balancer-controller"]
    assert {"targetgroupbindings.elbv2.k8s.aws", "ingressclassparams.elbv2.k8s.aws"} <= lbc.shipped
    assert not lbc.left, lbc.upgraded
    (gpu,) = [
        f for f in crds.findings(render.rendered(INSTANCES["lke"]), helm) if f.release.chart == "gpu-operator"
    ]
    assert "clusterpolicies.nvidia.com" in set(gpu.upgraded)
    assert {group_of(c) for c in gpu.left} == {"resource.nvidia.com"}


def _restacked(name: str, edit, helm: str) -> render.RenderedStack:
    stack = INSTANCES[name].build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    edit(synthesized)
    return render.render_stack(name, synthesized, render.rendered(INSTANCES[name]).kube_version, helm)


def _release(synthesized: dict, chart: str) -> dict:
    (body,) = [r for r in synthesized["resource"]["helm_release"].values() if r["chart"] == chart]
    return body


@pytest.mark.parametrize(
    "breakage",
    [
        "karpenter-without-skip_crds",
        "kube-prometheus-stack-without-its-hook",
        "lb-controller-without-its-step",
    ],
)
def test_a_stack_whose_crds_stay_behind_fails(helm, upstream, breakage):
    def edit(synthesized: dict) -> None:
        if breakage == "karpenter-without-skip_crds":
            _release(synthesized, "karpenter").pop("skip_crds")
        elif breakage == "kube-prometheus-stack-without-its-hook":
            release = _release(synthesized, "kube-prometheus-stack")
            release.setdefault("set", []).append({"name": "crds.upgradeJob.enabled", "value": "false"})
        else:
            release = _release(synthesized, "aws-load-balancer-controller")
            release["depends_on"] = [d for d in release["depends_on"] if not d.startswith("terraform_data.")]

    broken = _restacked("eks-karpenter", edit, helm)
    found, _ = problems(broken, helm)
    chart = {
        "karpenter-without-skip_crds": "karpenter",
        "kube-prometheus-stack-without-its-hook": "kube-prometheus-stack",
        "lb-controller-without-its-step": "aws-load-balancer-controller",
    }[breakage]
    assert any(f"({chart})" in p for p in found), found


def test_a_listed_group_nothing_leaves_behind_fails(helm, upstream, monkeypatch):
    monkeypatch.setitem(SAFE, "karpenter", {"karpenter.sh": "stale"})
    with pytest.raises(AssertionError, match="listed but upgraded"):
        test_every_crd_in_a_charts_crds_directory_is_upgraded_or_listed(helm, upstream)


def test_a_crd_step_must_be_keyed_on_the_version(helm, upstream):
    """A step that runs once (no version in its triggers) does not upgrade at a bump."""
    eks = render.rendered(INSTANCES["eks-karpenter"])
    (lbc,) = [r for r in eks.releases if r.chart == "aws-load-balancer-controller"]
    assert crds.crd_steps(eks.synthesized, lbc)
    unkeyed = copy.deepcopy(eks.synthesized)
    for body in unkeyed["resource"]["terraform_data"].values():
        body.pop("triggers_replace", None)
    assert not crds.crd_steps(unkeyed, lbc)


def test_every_traefik_reads_ingresses_only(helm, upstream):
    """The reason traefik's CRDs are SAFE: every rendered Traefik runs neither the IngressRoute
    (kubernetescrd) nor the Gateway provider, by its container's arguments."""
    seen = 0
    for name in sorted(INSTANCES):
        for release, obj in render.rendered(INSTANCES[name]).objects():
            if release.chart == "traefik" and obj["kind"] == "Deployment":
                seen += 1
                (container,) = [
                    c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == "traefik"
                ]
                args = " ".join(container.get("args", []))
                assert "--providers.kubernetesingress" in args, name
                assert (
                    "--providers.kubernetescrd" not in args and "--providers.kubernetesgateway" not in args
                ), name
    assert seen == 4  # single-node, proxmox-ha, k3d-poc, lke
