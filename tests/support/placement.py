"""The placement model of tests/gates/test_placement.py: the node groups a stack creates, the pod
templates it renders and why a template does not fit a group."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from gpu_constructs.compute.base import NodeGroup as ComputeNodeGroup
from tests.support import render

GPU = "nvidia.com/gpu"


# Labels every node carries (kubelet) on these x86_64 Linux clusters.
NODE_LABELS = {"kubernetes.io/os": {"linux"}, "kubernetes.io/arch": {"amd64"}}


# Labels that GPU Feature Discovery / the GPU Operator put on GPU nodes at run time; a selector on
# them matches a GPU group (any value: e.g. nvidia.com/mps.capable is true only with MPS sharing).
RUNTIME_GPU_LABELS = ("nvidia.com/", "feature.node.kubernetes.io/")


ANY = None  # a label whose value is not known before the node exists


@dataclass
class NodeGroup:
    name: str
    labels: dict[str, set[str] | None] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    gpu: bool = False
    control_plane: bool = False
    """A node that runs only the control plane (k3d's server-0, as the seed's table has it): a pod
    the stack renders that could land there is a finding."""
    # What the synthesized stack says beyond labels and taints, where it says it (None: not read).
    node: str | None = None
    """The node's name, for a group read per node."""
    per_node: bool = False
    """The group is one node (a host, a VM, a k3d node), not a pool."""
    instance_types: tuple[str, ...] | None = None
    gpus_per_node: int | None = None
    min_nodes: int | None = None
    max_nodes: int | None = None
    image_device_plugin: bool = False
    """The nodes' image runs NVIDIA's device plugin itself: Bottlerocket's NVIDIA variants start it
    as a host service (bottlerocket-os/bottlerocket-core-kit packages/nvidia-k8s-device-plugin), and
    Karpenter launches them for GPU instance types of an EC2NodeClass with a ``bottlerocket@`` alias."""


def _labels(pairs: dict[str, str]) -> dict[str, set[str] | None]:
    return {key: {str(value)} for key, value in pairs.items()}


def _taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` (k3s/k3d syntax)."""
    key_value, effect = text.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect}


def _is_gpu(group: NodeGroup) -> bool:
    return any("gpu" in key for key in group.labels) or any("gpu" in t["key"] for t in group.taints)


def from_compute(group: ComputeNodeGroup) -> NodeGroup:
    """A GpuCompute's node group as placement reads it: every label a node of it carries (the
    platform's members, the compute's labels, and the values Karpenter picks from)."""
    labels: dict[str, set[str] | None] = _labels({**group.members, **group.labels})
    labels.update({key: set(values) for key, values in group.label_choices.items()})
    for key, values in NODE_LABELS.items():
        labels.setdefault(key, values)
    return NodeGroup(
        group.name,
        labels,
        [{"key": t.key, "value": t.value, "effect": t.effect} for t in group.taints],
        gpu=group.gpu,
        control_plane=group.control_plane_only,
    )


def node_groups(stack: render.RenderedStack) -> list[NodeGroup]:
    """The node groups the stack's GpuCompute creates."""
    assert stack.node_groups, f"{stack.stack}: rendered without its GpuCompute's node groups"
    return [from_compute(group) for group in stack.node_groups]


def synthesized_node_groups(stack: render.RenderedStack) -> list[NodeGroup]:
    """The node groups the stack creates, read from its own resources and rendered NodePools."""
    resources = stack.synthesized.get("resource", {})
    groups: list[NodeGroup] = []
    # k3s hosts over SSH (single-node): the install step's NODE_LABELS / NODE_TAINTS settings
    for name, body in resources.get("terraform_data", {}).items():
        triggers = body.get("triggers_replace") or {}
        if isinstance(triggers, dict) and "k3s-install.sh:K3S_ROLE" in triggers:
            labels = dict(
                item.split("=", 1) for item in triggers.get("k3s-install.sh:NODE_LABELS", "").split()
            )
            taints = [_taint(t) for t in triggers.get("k3s-install.sh:NODE_TAINTS", "").split()]
            groups.append(NodeGroup(name, _labels(labels), taints, per_node=True))
        # k3d agents and server-0: NODE_LABELS / NODE_TAINTS as node=key=value[:Effect]
        env = {}
        for provisioner in body.get("provisioner", []):
            env.update(provisioner.get("local-exec", {}).get("environment", {}))
        if "CREATE_ARGS" in env and "k3d" in str(body):
            nodes: dict[str, NodeGroup] = {}
            agents = int(re.search(r"--agents (\d+)", env["CREATE_ARGS"]).group(1))  # type: ignore[union-attr]
            cluster = env.get("CLUSTER", "")
            for index in range(agents):
                node = f"k3d-{cluster}-agent-{index}"
                nodes[node] = NodeGroup(node, node=node, per_node=True)
            server = f"k3d-{cluster}-server-0"
            nodes[server] = NodeGroup(server, control_plane=True, node=server, per_node=True)
            for entry in env.get("NODE_LABELS", "").split():
                node, key, value = entry.split("=", 2)
                nodes[node].labels[key] = {value}
            for entry in env.get("NODE_TAINTS", "").split():
                node, taint = entry.split("=", 1)
                nodes[node].taints.append(_taint(taint))
            groups += nodes.values()
    # Proxmox VMs: k3s config written by cloud-init; size and passed-through GPUs of the VM
    vms = {vm["name"]: vm for vm in resources.get("proxmox_virtual_environment_vm", {}).values()}
    for name, body in resources.get("proxmox_virtual_environment_file", {}).items():
        for source in body.get("source_raw", []):
            cloud_init = yaml.safe_load(
                source["data"].split("\n", 1)[1] if source["data"].startswith("#") else source["data"]
            )
            for item in (cloud_init or {}).get("write_files", []):
                if item.get("path", "").endswith("k3s/config.yaml"):
                    config = yaml.safe_load(item["content"])
                    labels = dict(label.split("=", 1) for label in config.get("node-label", []))
                    vm = vms[cloud_init["hostname"]]
                    shape = (
                        f"{vm['cpu'][0]['cores']} vCPU, {vm['memory'][0]['dedicated'] // 1024} GB, "
                        f"{vm['disk'][0]['size']} GB disk"
                    )
                    groups.append(
                        NodeGroup(
                            name,
                            _labels(labels),
                            [_taint(t) for t in config.get("node-taint", [])],
                            node=cloud_init["hostname"],
                            per_node=True,
                            instance_types=(shape,),
                            gpus_per_node=len(vm.get("hostpci", [])),
                        )
                    )
    # LKE: the cluster's pools and separate node pools
    for cluster in resources.get("linode_lke_cluster", {}).values():
        for pool in cluster.get("pool", []):
            groups.append(
                NodeGroup(
                    pool.get("label", "pool"),
                    _labels(pool.get("labels", {})),
                    pool.get("taint", []),
                    instance_types=(pool["type"],),
                    min_nodes=pool["count"],
                    max_nodes=pool["count"],
                )
            )
    for name, pool in resources.get("linode_lke_node_pool", {}).items():
        (autoscaler,) = pool["autoscaler"]
        groups.append(
            NodeGroup(
                name,
                _labels(pool.get("labels", {})),
                pool.get("taint", []),
                instance_types=(pool["type"],),
                min_nodes=autoscaler["min"],
                max_nodes=autoscaler["max"],
            )
        )
    # EKS managed node groups
    effects = {
        "NO_SCHEDULE": "NoSchedule",
        "NO_EXECUTE": "NoExecute",
        "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    }
    for name, node_group in resources.get("aws_eks_node_group", {}).items():
        taints = [{**t, "effect": effects[t["effect"]]} for t in node_group.get("taint", [])]
        scaling = node_group["scaling_config"]
        groups.append(
            NodeGroup(
                name,
                _labels(node_group.get("labels", {})),
                taints,
                instance_types=tuple(node_group["instance_types"]),
                min_nodes=scaling["min_size"],
                max_nodes=scaling["max_size"],
            )
        )
    # Karpenter NodePools: template labels, single-valued requirements, the nodepool label
    aliases = {
        obj["metadata"]["name"]: [term.get("alias", "") for term in obj["spec"]["amiSelectorTerms"]]
        for _, obj in stack.objects()
        if obj.get("kind") == "EC2NodeClass"
    }
    for _, obj in stack.objects():
        if obj.get("kind") == "NodePool" and obj["apiVersion"].startswith("karpenter.sh/"):
            template = obj["spec"]["template"]
            labels: dict[str, set[str] | None] = _labels(template.get("metadata", {}).get("labels", {}))
            labels["karpenter.sh/nodepool"] = {obj["metadata"]["name"]}
            for requirement in template["spec"].get("requirements", []):
                if requirement["operator"] == "In":
                    labels[requirement["key"]] = set(requirement["values"])
            families = labels.get("karpenter.k8s.aws/instance-family") or set()
            sizes = labels.get("karpenter.k8s.aws/instance-size") or set()
            group = NodeGroup(
                obj["metadata"]["name"],
                labels,
                template["spec"].get("taints", []),
                instance_types=tuple(sorted(f"{f}.{s}" for f in families for s in sizes)),
                min_nodes=0,  # Karpenter keeps no minimum
            )
            group.gpu = GPU in obj["spec"].get("limits", {})
            node_class = aliases[template["spec"]["nodeClassRef"]["name"]]
            group.image_device_plugin = group.gpu and any(a.startswith("bottlerocket@") for a in node_class)
            groups.append(group)
    for group in groups:
        group.gpu = group.gpu or _is_gpu(group)
        for key, values in NODE_LABELS.items():
            group.labels.setdefault(key, values)
    return groups


@dataclass
class PodTemplate:
    where: str
    spec: dict[str, Any]
    daemonset: bool = False


def pod_templates(stack: render.RenderedStack) -> list[PodTemplate]:
    found = []
    for release, obj in stack.objects():
        kind, spec, name = obj.get("kind"), obj.get("spec") or {}, obj.get("metadata", {}).get("name")
        where = f"{release.address}: {kind} {name}"
        if kind == "Pod":
            found.append(PodTemplate(where, spec))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            found.append(PodTemplate(where, spec["template"]["spec"], kind == "DaemonSet"))
        elif kind == "CronJob":
            found.append(PodTemplate(where, spec["jobTemplate"]["spec"]["template"]["spec"]))
        elif obj.get("apiVersion") == "monitoring.coreos.com/v1" and kind in ("Prometheus", "Alertmanager"):
            # The Prometheus Operator creates their StatefulSets with the custom resource's
            # nodeSelector, tolerations and affinity (prometheus-operator pkg/prometheus/statefulset.go).
            fields = ("nodeSelector", "tolerations", "affinity", "containers")
            found.append(PodTemplate(where, {key: spec[key] for key in fields if key in spec}))
        elif kind == "ClusterPolicy":
            # The operator's operands are DaemonSets with the ClusterPolicy's daemonsets tolerations,
            # on nodes it labels nvidia.com/gpu.deploy.<operand>=true (GPU nodes only).
            daemonsets = spec.get("daemonsets", {})
            found.append(
                PodTemplate(
                    f"{where} operands",
                    {
                        "tolerations": daemonsets.get("tolerations", []),
                        "nodeSelector": {"nvidia.com/gpu.deploy.driver": "true"},
                        "containers": [{"name": "operand", "resources": {"limits": {}}}],
                    },
                    daemonset=True,
                )
            )
    for release in stack.releases:
        if release.chart == "jupyterhub":
            values = release.values()
            singleuser = values.get("singleuser", {})
            for profile in singleuser.get("profileList", []):
                override = profile.get("kubespawner_override", {})
                limits = override.get("extra_resource_limits", {})
                images = [
                    choice.get("kubespawner_override", {}).get("image")
                    for option in profile.get("profile_options", {}).values()
                    for choice in option.get("choices", {}).values()
                ]
                found.append(
                    PodTemplate(
                        f"{release.address}: JupyterHub profile {profile.get('slug')}",
                        {
                            "nodeSelector": override.get("node_selector", singleuser.get("nodeSelector", {})),
                            "tolerations": override.get("tolerations", [])
                            + singleuser.get("extraTolerations", []),
                            "containers": [
                                {"name": "notebook", "image": image, "resources": {"limits": limits}}
                                for image in images or [override.get("image")]
                            ],
                        },
                    )
                )
    found += servicelb_templates(stack)
    return found


SERVICELB_LABEL = "svccontroller.k3s.cattle.io/enablelb"


def _k3d_create_args(stack: render.RenderedStack) -> list[str]:
    args = []
    for body in stack.synthesized.get("resource", {}).get("terraform_data", {}).values():
        for provisioner in body.get("provisioner", []):
            env = provisioner.get("local-exec", {}).get("environment", {})
            if "CREATE_ARGS" in env and "k3d" in str(body):
                args.append(env["CREATE_ARGS"])
    return args


def servicelb_templates(stack: render.RenderedStack) -> list[PodTemplate]:
    """The pods k3s's ServiceLB creates at run time on a k3d cluster (on unless --disable=servicelb):
    one DaemonSet per LoadBalancer Service, tolerating the control-plane taints and
    CriticalAddonsOnly (any effect), with node selector enablelb=true only once some node carries
    that label (k3s pkg/cloudprovider/servicelb.go, newDaemonSet, nodeHasDaemonSetLabel)."""
    args = _k3d_create_args(stack)
    if not args or all("--disable=servicelb" in a for a in args):
        return []
    labelled = any(SERVICELB_LABEL in group.labels for group in node_groups(stack))
    found = []
    for release, obj in stack.objects():
        if obj.get("kind") != "Service" or (obj.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        spec: dict[str, Any] = {
            "tolerations": [
                {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
                {
                    "key": "node-role.kubernetes.io/control-plane",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                },
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
            ],
            "containers": [
                {"name": f"lb-{p.get('protocol', 'TCP').lower()}-{p['port']}", "image": "klipper-lb"}
                for p in obj["spec"].get("ports", [])
            ],
        }
        if labelled:
            spec["nodeSelector"] = {SERVICELB_LABEL: "true"}
        name = obj["metadata"]["name"]
        found.append(PodTemplate(f"{release.address}: k3s ServiceLB DaemonSet svclb-{name}", spec, True))
    return found


def _requests_gpu(spec: dict[str, Any]) -> bool:
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = container.get("resources") or {}
        if any(GPU in (resources.get(k) or {}) for k in ("limits", "requests")):
            return True
    return False


def _label_matches(group: NodeGroup, key: str, operator: str, values: list[str]) -> bool:
    runtime = group.gpu and key.startswith(RUNTIME_GPU_LABELS) and key not in group.labels
    present = key in group.labels or runtime
    known = None if runtime else group.labels.get(key)
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator == "In":
        return present and (known is ANY or bool(known & set(values)))
    if operator == "NotIn":
        return not present or known is ANY or not known <= set(values)
    if operator in ("Gt", "Lt"):
        return present
    raise ValueError(operator)


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    for toleration in tolerations or []:
        if toleration.get("effect") and toleration["effect"] != taint["effect"]:
            continue
        if toleration.get("operator") == "Exists" and not toleration.get("key"):
            return True
        if toleration.get("key") != taint["key"]:
            continue
        if toleration.get("operator") == "Exists" or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def why_not(spec: dict[str, Any], group: NodeGroup) -> str | None:
    """Why a pod with this spec cannot run on ``group``, or None when it can."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if not _label_matches(group, key, "In", [str(value)]):
            return f"nodeSelector {key}={value}"
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if affinity:
        terms = affinity.get("nodeSelectorTerms", [])
        if not any(
            all(
                _label_matches(group, e["key"], e["operator"], e.get("values", []))
                for e in term.get("matchExpressions", [])
            )
            for term in terms
        ):
            return "required node affinity"
    for taint in group.taints:
        if taint["effect"] in ("NoSchedule", "NoExecute") and not _tolerates(spec.get("tolerations"), taint):
            return f"taint {taint['key']}={taint.get('value', '')}:{taint['effect']} not tolerated"
    if _requests_gpu(spec) and not group.gpu:
        return f"requests {GPU} on a group without GPUs"
    return None


def placement_problems(stack: render.RenderedStack) -> list[str]:
    groups = node_groups(stack)
    templates = pod_templates(stack)
    problems = []
    gpu_images = {
        c.get("image")
        for t in templates
        if _requests_gpu(t.spec)
        for c in t.spec.get("containers", [])
        if c.get("image")
    }
    for template in templates:
        reasons = {group.name: why_not(template.spec, group) for group in groups}
        fits = [name for name, reason in reasons.items() if reason is None]
        on_control_plane = [g.name for g in groups if g.control_plane and g.name in fits]
        if on_control_plane:
            problems.append(f"{template.where} can run on the control-plane node {on_control_plane}")
        if not fits:
            problems.append(f"{template.where} fits no node group: {json.dumps(reasons, sort_keys=True)}")
            continue
        gpu_groups = [g.name for g in groups if g.gpu]
        on_gpu = [name for name in fits if name in gpu_groups]
        if template.daemonset and on_gpu and len(on_gpu) < len(gpu_groups):
            # a GPU DaemonSet (device plugin, operator operands) must reach every GPU node
            missed = {name: reasons[name] for name in gpu_groups if name not in on_gpu}
            problems.append(
                f"{template.where} runs on some GPU groups but not on {json.dumps(missed, sort_keys=True)}"
            )
        images = {
            c.get("image")
            for c in template.spec.get("containers", []) + template.spec.get("initContainers", [])
        }
        if template.daemonset and images & gpu_images:
            missed = [g.name for g in groups if g.gpu and reasons[g.name] is not None]
            if missed:
                problems.append(
                    f"{template.where} pre-pulls GPU workload images but cannot run on GPU groups "
                    f"{missed}: {[reasons[m] for m in missed]}"
                )
    return sorted(problems)


DEVICE_PLUGIN_CONTAINER = "nvidia-device-plugin-ctr"
"""The container of the nvidia-device-plugin chart's plugin DaemonSet (NVIDIA/k8s-device-plugin
deployments/helm/nvidia-device-plugin/templates/daemonset-device-plugin.yml); the chart's MPS and
GFD DaemonSets register no resource."""


def device_plugin_problems(stack: render.RenderedStack) -> list[str]:
    """Every GPU group the synthesized stack creates gets exactly one device plugin for its GPUs:
    its image's or one DaemonSet's. The kubelet keeps one endpoint per resource name, the last to
    register (kubernetes pkg/kubelet/cm/devicemanager/manager.go, PluginConnected), so a second
    plugin replaces the first one's devices whenever it (re)starts; with none the GPUs are never
    advertised."""
    # The chart's plugin DaemonSet, and the GPU Operator's operands where they include its device
    # plugin (ClusterPolicy spec.devicePlugin.enabled, default true).
    operators = {
        f"{release.address}: ClusterPolicy {obj['metadata']['name']} operands"
        for release, obj in stack.objects()
        if obj.get("kind") == "ClusterPolicy" and (obj["spec"].get("devicePlugin") or {}).get("enabled", True)
    }
    templates = [
        t
        for t in pod_templates(stack)
        if t.daemonset
        and (
            t.where in operators
            or any(c.get("name") == DEVICE_PLUGIN_CONTAINER for c in t.spec.get("containers", []))
        )
    ]
    problems = []
    for group in synthesized_node_groups(stack):
        if not group.gpu:
            continue
        on = [t.where for t in templates if why_not(t.spec, group) is None]
        plugins = on + (["the node image's own plugin"] if group.image_device_plugin else [])
        if len(plugins) != 1:
            problems.append(f"{group.name}: {len(plugins)} device plugins register {GPU}: {plugins}")
    return problems


def node_group_disagreements(stack: render.RenderedStack) -> list[str]:
    """Where the GpuCompute's node groups and the synthesized stack disagree: every group the JSON
    shows is one of the compute's (same labels, taints, GPU and control-plane role, node name,
    instance shape, GPUs per node, size), every one of the compute's shows in the JSON, and a group
    read node by node has as many nodes as the compute says."""
    problems = []
    computed = {group.name: group for group in stack.node_groups}
    matched: dict[str, list[NodeGroup]] = {name: [] for name in computed}
    for found in synthesized_node_groups(stack):
        own = {key: values for key, values in found.labels.items() if key not in NODE_LABELS}

        def agrees(group: ComputeNodeGroup, found: NodeGroup = found, own: dict = own) -> bool:
            placed = from_compute(group)
            taints = sorted(str(sorted(t.items())) for t in found.taints)
            return (
                all(placed.labels.get(key) == values for key, values in own.items())
                and taints == sorted(str(sorted(t.items())) for t in placed.taints)
                and placed.gpu == found.gpu
                and placed.control_plane == found.control_plane
                and (found.node is None or not group.names or found.node in group.names)
            )

        candidates = [group for group in computed.values() if agrees(group)]
        if len(candidates) != 1:
            problems.append(f"{found.name}: matches {[g.name for g in candidates]} of {sorted(computed)}")
            continue
        (group,) = candidates
        matched[group.name].append(found)
        for fact in ("instance_types", "gpus_per_node", "min_nodes", "max_nodes"):
            value = getattr(found, fact)
            want = getattr(group, fact)
            if fact == "instance_types" and value is not None:
                value, want = sorted(value), sorted(want)
            if value is not None and value != want:
                problems.append(f"{found.name}: {fact} {value} in the stack, {want} from the compute")
    for name, found_groups in matched.items():
        group = computed[name]
        if not found_groups:
            problems.append(f"{name}: not in the synthesized stack")
        per_node = [f for f in found_groups if f.per_node]
        if per_node and not (group.min_nodes == len(per_node) == group.max_nodes):
            problems.append(
                f"{name}: {len(per_node)} nodes in the stack, {group.min_nodes}-{group.max_nodes}"
            )
    return problems
