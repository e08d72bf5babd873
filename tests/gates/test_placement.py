"""Placement: every pod template a stack renders fits a node group the stack itself creates.

Node groups come from the stack's GpuCompute (its ``node_groups``), and are held to an independent
reading of the synthesized stack: the k3s hosts' and VMs' ``node-label``/``node-taint`` settings,
the k3d agents' labels and taints, the LKE pools, the EKS managed node group and the Karpenter
NodePools. Pod templates: Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, Pods,
JupyterHub's profiles (the pods KubeSpawner creates) and the GPU Operator's ClusterPolicy operands.
A template fits a group when its node selector and required node affinity match the group's labels,
its tolerations cover the group's NoSchedule/NoExecute taints, and it asks for ``nvidia.com/gpu``
only on a GPU group. A DaemonSet that runs on one GPU group must run on all of them (a device plugin
or operand missing from a GPU pool leaves its GPUs unused), and one that pre-pulls an image a GPU
pod runs must reach the GPU groups.
"""

from __future__ import annotations

import copy
import dataclasses

from gpu_constructs.cluster import Taint
from tests.support import render
from tests.support.placement import (
    SERVICELB_LABEL,
    _k3d_create_args,
    device_plugin_problems,
    node_group_disagreements,
    node_groups,
    placement_problems,
    pod_templates,
    servicelb_templates,
    why_not,
)
from tests.support.stacks import INSTANCES

# --- pod templates -----------------------------------------------------------------------------------


def test_node_groups_agree_with_the_synthesized_stack(rendered_stack):
    assert node_group_disagreements(rendered_stack) == []


def test_a_node_group_the_compute_misreports_fails(helm, upstream):
    stack = copy.deepcopy(render.rendered(INSTANCES["lke"]))
    assert node_group_disagreements(stack) == []
    stack.node_groups = tuple(
        dataclasses.replace(g, max_nodes=9, taints=()) if g.gpu else g for g in stack.node_groups
    )
    problems = node_group_disagreements(stack)
    assert any("matches [] of" in p for p in problems) and any("gpu pool: not in" in p for p in problems)
    stack = copy.deepcopy(render.rendered(INSTANCES["lke"]))
    stack.node_groups = tuple(dataclasses.replace(g, max_nodes=9) if g.gpu else g for g in stack.node_groups)
    assert any("max_nodes 5 in the stack, 9 from the compute" in p for p in node_group_disagreements(stack))


def test_every_stack_has_node_groups_and_gpu_groups(rendered_stack):
    stack = rendered_stack
    groups = node_groups(stack)
    assert any(group.gpu for group in groups), [g.name for g in groups]


def test_every_pod_template_fits_a_node_group(rendered_stack):
    stack = rendered_stack
    assert pod_templates(stack)
    assert placement_problems(stack) == []


def test_every_gpu_group_gets_one_device_plugin(rendered_stack):
    assert device_plugin_problems(rendered_stack) == []


def bottlerocket_eks(time_slicing_replicas: int = 1) -> render.RenderedStack:
    """eks-karpenter with Bottlerocket nodes, whose NVIDIA variants run NVIDIA's device plugin
    themselves."""
    import cdktf

    from environments import Instance

    settings = {"ami_alias": "bottlerocket@v1.50.0", "time_slicing_replicas": time_slicing_replicas}
    stack = Instance("eks-karpenter", "eks-karpenter", settings).build(cdktf.Testing.app())
    helm = render.helm_binary()
    assert helm is not None
    return render.render_built("eks-karpenter-bottlerocket", stack, helm)


def test_bottlerocket_gpu_nodes_run_only_their_own_device_plugin(helm, upstream):
    """Bottlerocket's plugin registers nvidia.com/gpu as a host service: the stack's DaemonSet there
    would be a second plugin for the same resource, and the GPU pool is the only place it runs."""
    stack = bottlerocket_eks()
    assert device_plugin_problems(stack) == []
    assert placement_problems(stack) == []
    assert [r for r in stack.releases if r.chart == "nvidia-device-plugin"] == []


def test_a_second_or_a_missing_device_plugin_fails(helm, upstream):
    al2023 = render.rendered(INSTANCES["eks-karpenter"])
    (plugin,) = [r for r in al2023.releases if r.chart == "nvidia-device-plugin"]
    bottlerocket = copy.deepcopy(bottlerocket_eks())
    bottlerocket.releases.append(plugin)
    assert any(
        p.startswith("gpu-inference: 2 device plugins") and "the node image's own plugin" in p
        for p in device_plugin_problems(bottlerocket)
    )
    missing = copy.deepcopy(al2023)
    missing.releases = [r for r in missing.releases if r.chart != "nvidia-device-plugin"]
    assert device_plugin_problems(missing) == ["gpu-inference: 0 device plugins register nvidia.com/gpu: []"]


def test_a_removed_toleration_fails(helm, upstream):
    stack = copy.deepcopy(render.rendered(INSTANCES["k3d-poc"]))
    assert placement_problems(stack) == []
    for release in stack.releases:
        for obj in release.objects:
            if obj["kind"] == "DaemonSet" and obj["metadata"]["name"] == "nvidia-device-plugin":
                obj["spec"]["template"]["spec"]["tolerations"] = []
    assert any(
        "DaemonSet nvidia-device-plugin fits no node group" in p and "not tolerated" in p
        for p in placement_problems(stack)
    )


def test_a_gpu_request_off_the_gpu_groups_fails(helm, upstream):
    stack = copy.deepcopy(render.rendered(INSTANCES["eks-karpenter"]))
    for release in stack.releases:
        for obj in release.objects:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "tinyllama-inference":
                obj["spec"]["template"]["spec"]["nodeSelector"] = {"role": "system"}
    assert any("tinyllama-inference fits no node group" in p for p in placement_problems(stack))


def test_a_gpu_daemonset_missing_a_gpu_group_fails(helm, upstream):
    stack = copy.deepcopy(render.rendered(INSTANCES["proxmox-ha"]))
    assert placement_problems(stack) == []
    # one GPU worker with a taint nothing tolerates
    groups = []
    for group in stack.node_groups:
        if group.gpu:
            odd = dataclasses.replace(
                group,
                name="wk-gpu4",
                names=group.names[-1:],
                taints=(*group.taints, Taint("dedicated", "x")),
            )
            group = dataclasses.replace(group, names=group.names[:-1])
            groups.append(odd)
        groups.append(group)
    stack.node_groups = tuple(groups)
    assert any(
        "runs on some GPU groups but not on" in p and "dedicated=x:NoSchedule" in p
        for p in placement_problems(stack)
    )


def test_a_pod_that_could_land_on_the_k3d_server_fails(helm, upstream):
    """server-0 runs only the control plane: a pod that tolerates every taint and selects no node
    is flagged."""
    stack = copy.deepcopy(render.rendered(INSTANCES["k3d-poc"]))
    assert placement_problems(stack) == []
    for release in stack.releases:
        for obj in release.objects:
            if obj["kind"] == "DaemonSet" and obj["metadata"]["name"] == "nvidia-device-plugin":
                spec = obj["spec"]["template"]["spec"]
                spec["tolerations"] = [{"operator": "Exists"}]
                spec.pop("nodeSelector", None)
                spec.pop("affinity", None)
    assert any(
        "nvidia-device-plugin can run on the control-plane node ['server']" in p
        for p in placement_problems(stack)
    )


def test_the_k3d_servicelb_pods_stay_off_the_server(helm, upstream):
    """k3s creates a svclb DaemonSet for the ingress's LoadBalancer Service; it tolerates
    CriticalAddonsOnly, so only the enablelb label on the app agent keeps it off server-0."""
    stack = copy.deepcopy(render.rendered(INSTANCES["k3d-poc"]))
    svclb = servicelb_templates(stack)
    assert [t.where.rsplit(" ", 1)[-1] for t in svclb] == ["svclb-traefik"]
    groups = node_groups(stack)
    assert [g.name for g in groups if why_not(svclb[0].spec, g) is None] == ["app agents"]
    assert placement_problems(stack) == []
    # Without the label on any node, k3s leaves the DaemonSet unconfined.
    stack.node_groups = tuple(
        dataclasses.replace(g, labels={k: v for k, v in g.labels.items() if k != SERVICELB_LABEL})
        for g in stack.node_groups
    )
    assert any(
        "svclb-traefik can run on the control-plane node ['server']" in p for p in placement_problems(stack)
    )


def host_root_propagation(stack: render.RenderedStack) -> list[str]:
    """Pod templates that mount the node's ``/`` with HostToContainer or Bidirectional propagation."""
    found = []
    for template in pod_templates(stack):
        roots = {
            v["name"]
            for v in template.spec.get("volumes", [])
            if (v.get("hostPath") or {}).get("path", "").rstrip("/") == "" and "hostPath" in v
        }
        for container in template.spec.get("containers", []) + template.spec.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] in roots and mount.get("mountPropagation") in (
                    "HostToContainer",
                    "Bidirectional",
                ):
                    found.append(
                        f"{template.where} container {container['name']}: / with {mount['mountPropagation']}"
                    )
    return found


def test_no_host_root_mount_propagation_on_container_nodes(rendered_stack):
    """A k3d node is a Docker container whose / is not a shared or slave mount: a pod mounting the
    node's / with HostToContainer or Bidirectional propagation fails at container create
    (kube-prometheus-stack's node-exporter does by default, hostRootFsMount)."""
    if not _k3d_create_args(rendered_stack):
        return
    assert host_root_propagation(rendered_stack) == []


def test_node_exporter_mounts_the_host_root_where_nodes_are_machines(helm, upstream):
    """Not vacuous: on lke node-exporter keeps the chart's HostToContainer mount of /."""
    found = host_root_propagation(render.rendered(INSTANCES["lke"]))
    assert any("prometheus-node-exporter" in f and "HostToContainer" in f for f in found), found
