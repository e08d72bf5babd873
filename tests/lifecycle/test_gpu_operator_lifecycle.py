"""The GPU Operator over its life: its CRDs at a chart bump and what a destroy leaves to the operator.

tests/lifecycle/test_crds.py holds every release to upgrading the CRDs its chart ships in crds/; this
shows that gate failing for the GPU Operator's release without the chart's CRD upgrade hook, and
that no values file can turn the hook off.
"""

from __future__ import annotations

import json

import cdktf

from gpu_constructs.helm import ValuesLayers
from tests.support import render
from tests.support.lifecycle import crds
from tests.support.lifecycle.crds import problems
from tests.support.stacks import INSTANCES


def _lke(edit) -> render.RenderedStack:
    stack = INSTANCES["lke"].build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    edit(synthesized)
    return render.render_stack(
        "lke", synthesized, render.rendered(INSTANCES["lke"]).kube_version, render.helm_binary()
    )


def test_a_gpu_operator_without_its_crd_hook_breaks_the_crd_gate(helm, upstream):
    def without_hook(synthesized: dict) -> None:
        (release,) = [
            r for r in synthesized["resource"]["helm_release"].values() if r["chart"] == "gpu-operator"
        ]
        release.setdefault("set", []).append({"name": "operator.upgradeCRD", "value": "false"})

    found, left = problems(_lke(without_hook), helm)
    assert {"clusterpolicies.nvidia.com", "nvidiadrivers.nvidia.com"} <= {
        p.split(": ", 1)[1].split(" ", 1)[0] for p in found if "(gpu-operator)" in p
    }, found
    assert ("gpu-operator", "nvidia.com") in left


def test_no_values_file_turns_the_crd_hook_off(tmp_path, synth):
    from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
    from tests.conftest import make_cluster, release_values, resources

    (tmp_path / "gpu-operator").mkdir()
    (tmp_path / "gpu-operator" / "base.yaml").write_text("operator:\n  upgradeCRD: false\n")
    synthesized = synth(
        lambda stack: GpuOperator(
            stack, "gpu", props=GpuOperatorProps(cluster=make_cluster(), values=ValuesLayers("dev", tmp_path))
        )
    )
    (release,) = resources(synthesized, "helm_release").values()
    assert release_values(release)["operator"]["upgradeCRD"] is True


def test_the_hook_covers_the_operators_crds(helm, upstream):
    (gpu,) = [
        f for f in crds.findings(render.rendered(INSTANCES["lke"]), helm) if f.release.chart == "gpu-operator"
    ]
    assert {"clusterpolicies.nvidia.com", "nvidiadrivers.nvidia.com", "gpuclusters.nvidia.com"} <= set(
        gpu.upgraded
    )


def test_a_gpucluster_outside_the_operators_release_must_depend_on_it(helm, upstream):
    """The GPU Operator finalizes GPUCluster, not ClusterPolicy (gpu-operator v26.7.0
    controllers/gpucluster_controller.go gpuClusterFinalizer; tests/support/lifecycle/destroy.py):
    one in a release the operator's may be uninstalled before stays Terminating."""
    import copy

    from tests.support.lifecycle import destroy, graph

    stack = copy.deepcopy(render.rendered(INSTANCES["lke"]))
    (operator,) = [r for r in stack.releases if r.chart == "gpu-operator"]
    (other, *_) = [
        r
        for r in stack.releases
        if r is not operator and not graph.depends_on(stack.synthesized, r.address, operator.address)
    ]
    other.objects.append(
        {"apiVersion": "nvidia.com/v1alpha1", "kind": "GPUCluster", "metadata": {"name": "gpu-cluster"}}
    )
    found = {(f.release, f.needs): f.why for f in destroy.findings(stack)}
    assert found.get((other.address, operator.address)) == "gpu-operator finalizes GPUCluster", found
    # the operator's own ClusterPolicy is no finding: nothing finalizes it
    assert not [f for f in destroy.findings(render.rendered(INSTANCES["lke"])) if "ClusterPolicy" in f.why]
