"""eks-karpenter: the AWS resources, Karpenter's objects, bad input, and a real offline plan."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from datetime import date

import cdktf
import pytest
import yaml
from syrupy.extensions.json import JSONSnapshotExtension

from environments import Instance
from gpu_constructs import versions
from gpu_constructs.cluster import GpuSharing, MigStrategy
from gpu_constructs.compute.eks import (
    GPU_POOL,
    SEED_NODE_POOLS,
    DisruptionBudget,
    NodeClassSpec,
    NodePoolSpec,
    check_eks_version,
)
from gpu_constructs.compute.eks.services import RdsPostgresProps
from gpu_constructs.errors import ConfigError
from tests.conftest import (
    NEEDS_AWS_5,
    ON_ENGINE,
    by_kind,
    manifests_of,
    release_values,
    resources,
    run_terraform,
    unavailable,
)
from tests.support import render
from tests.support.eks import (
    PLAN_VARS,
    aws_part,
    destroy_order_problems,
    eks_props,
    eks_stack,
    grants_of,
    role_of,
)
from tests.support.validators import validate_manifest


@pytest.fixture(scope="module")
def stack_json() -> dict:
    stack = Instance("eks-karpenter", "eks-karpenter").build(cdktf.Testing.app())
    return json.loads(cdktf.Testing.synth(stack))


def one(stack_json, kind):
    (found,) = resources(stack_json, kind).values()
    return found


def releases(stack_json):
    return {r["name"]: r for r in resources(stack_json, "helm_release").values()}


@ON_ENGINE["cdktf"]
def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


@ON_ENGINE["cdktn"]
def test_snapshot_cdktn(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


def test_vpc_spans_three_zones_with_discovery_tags_and_flow_logs(stack_json):
    subnets = list(resources(stack_json, "aws_subnet").values())
    private = [s for s in subnets if "karpenter.sh/discovery" in s["tags"]]
    public = [s for s in subnets if s["tags"].get("kubernetes.io/role/elb") == "1"]
    assert len(private) == 3 and len(public) == 3
    assert {s["availability_zone"] for s in private} == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}
    assert one(stack_json, "aws_flow_log")["traffic_type"] == "ALL"


def test_cluster_encrypts_secrets_uses_access_entries_and_a_current_version(stack_json):
    cluster = one(stack_json, "aws_eks_cluster")
    assert cluster["version"] == versions.EKS_KUBERNETES.version == "1.35"
    # EKS upgrades it when standard support ends instead of billing extended support.
    assert cluster["upgrade_policy"] == {"support_type": "STANDARD"}
    assert cluster["encryption_config"]["resources"] == ["secrets"]
    assert cluster["access_config"]["authentication_mode"] == "API"
    assert cluster["vpc_config"]["public_access_cidrs"] == "${var.api_allowed_cidrs}"


def test_system_node_group_is_tainted_on_demand_t3_xlarge(stack_json):
    group = one(stack_json, "aws_eks_node_group")
    assert group["instance_types"] == ["t3.xlarge"] and group["capacity_type"] == "ON_DEMAND"
    assert group["scaling_config"]["desired_size"] == 2
    assert group["taint"] == [{"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}]
    template = one(stack_json, "aws_launch_template")
    assert template["metadata_options"]["http_tokens"] == "required"


def test_a_replaced_system_node_group_joins_before_the_old_one_goes(stack_json):
    """A new system instance type replaces the managed node group (instance_types forces a new
    one): under a fixed name the new group collides with the old, and deleted first the old one
    takes every system pod's node with it. The group has a name prefix and create_before_destroy,
    and so does its launch template (Terraform makes what it depends on create-before-destroy too)."""
    group = one(stack_json, "aws_eks_node_group")
    assert "node_group_name" not in group and group["node_group_name_prefix"] == "system-"
    assert group["lifecycle"]["create_before_destroy"] is True
    template = one(stack_json, "aws_launch_template")
    assert "name" not in template and template["name_prefix"] == "gpu-dev-euw1-eks-system-"
    # Nothing may know the system nodes by their group's name, which changes with each replacement.
    assert "eks.amazonaws.com/nodegroup" not in json.dumps(stack_json)


def test_system_nodes_boot_from_an_encrypted_gp3_root_device(stack_json):
    # moto accepts any mapping; EC2 refuses one without a device name (InvalidBlockDeviceMapping).
    # The AL2023 EKS AMIs' root device is /dev/xvda.
    (mapping,) = one(stack_json, "aws_launch_template")["block_device_mappings"]
    assert mapping["device_name"] == "/dev/xvda"
    assert {k: mapping["ebs"][k] for k in ("volume_size", "volume_type", "encrypted")} == {
        "volume_size": 30,
        "volume_type": "gp3",
        "encrypted": "true",
    }


def _routes_by_subnet(stack_json) -> dict[str, dict]:
    """Each subnet's logical id -> its route table's one route."""
    tables = resources(stack_json, "aws_route_table")
    routes = {}
    for association in resources(stack_json, "aws_route_table_association").values():
        subnet = association["subnet_id"].split(".")[1]
        table = association["route_table_id"].split(".")[1]
        (routes[subnet],) = tables[table]["route"]
    return routes


@pytest.mark.parametrize("single_nat", [True, False])
def test_private_subnets_route_to_a_nat_gateway_and_public_ones_to_the_internet_gateway(synth, single_nat):
    zones = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    synthesized = eks_stack(synth, availability_zones=zones, single_nat_gateway=single_nat)
    routes = _routes_by_subnet(synthesized)
    subnets = resources(synthesized, "aws_subnet")
    nats = resources(synthesized, "aws_nat_gateway")
    (igw,) = resources(synthesized, "aws_internet_gateway")
    nat_zone = {
        f"${{aws_nat_gateway.{name}.id}}": subnets[nat["subnet_id"].split(".")[1]]["availability_zone"]
        for name, nat in nats.items()
    }
    assert len(nats) == (1 if single_nat else 3)
    assert set(routes) == set(subnets)
    for name, route in routes.items():
        assert route["cidr_block"] == "0.0.0.0/0"
        if "kubernetes.io/role/elb" in subnets[name]["tags"]:
            assert route["gateway_id"] == f"${{aws_internet_gateway.{igw}.id}}"
            assert route.get("nat_gateway_id") is None
        else:
            assert route["gateway_id"] is None
            zone = nat_zone[route["nat_gateway_id"]]
            assert single_nat or zone == subnets[name]["availability_zone"]


@pytest.mark.parametrize("single_nat", [True, False])
def test_system_nodes_start_after_their_route_out_and_go_before_it(synth, single_nat):
    """Without VPC endpoints a node reaches ECR, EKS and STS through its subnet's NAT gateway only:
    the system node group is created after every route table association, route table and NAT
    gateway its subnets use, with each NAT gateway's own public association, and on destroy
    deleted (with all that runs on it) before them (tests/lifecycle/test_destroy.py holds the
    controllers to the same)."""
    from tests.support.lifecycle import destroy, graph

    zones = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    synthesized = eks_stack(synth, availability_zones=zones, single_nat_gateway=single_nat)
    assert not resources(synthesized, "aws_vpc_endpoint")
    network = destroy.node_network(synthesized)
    nats = {f"aws_nat_gateway.{n}" for n in resources(synthesized, "aws_nat_gateway")}
    associations = {a for a in network if a.startswith("aws_route_table_association.")}
    assert nats <= network and len(associations) == 3 + len(nats)
    (group,) = resources(synthesized, "aws_eks_node_group")
    missing = network - graph.dependencies(synthesized, f"aws_eks_node_group.{group}")
    assert missing == set()
    assert graph.find_cycle(synthesized) is None


def test_karpenter_interruption_queue_and_its_four_rules(stack_json):
    assert one(stack_json, "aws_sqs_queue")["sqs_managed_sse_enabled"] is True
    patterns = [
        json.loads(r["event_pattern"])["detail-type"][0]
        for r in resources(stack_json, "aws_cloudwatch_event_rule").values()
    ]
    assert sorted(patterns) == [
        "AWS Health Event",
        "EC2 Capacity Reservation Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "EC2 Spot Instance Interruption Warning",
    ]
    identities = {
        i["service_account"] for i in resources(stack_json, "aws_eks_pod_identity_association").values()
    }
    assert identities == {"karpenter", "aws-load-balancer-controller", "external-dns"}


def test_interruption_queue_refuses_access_without_tls(stack_json):
    policy = json.loads(one(stack_json, "aws_sqs_queue_policy")["policy"])
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Action"] == "sqs:*" and deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _actions(statement) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def karpenter_statements(stack_json) -> list[dict]:
    (policy,) = [
        json.loads(r["policy"])
        for name, r in resources(stack_json, "aws_iam_role_policy").items()
        if name.startswith("eks_karpenter-controller")
    ]
    return policy["Statement"]


def test_karpenter_changes_only_what_carries_this_clusters_tags(stack_json):
    cluster = "kubernetes.io/cluster/gpu-dev-euw1-eks"
    untaggable = (
        "::image/*",
        "::snapshot/*",
        ":security-group/*",
        ":subnet/*",
        ":capacity-reservation/*",
        ":placement-group/*",
    )
    for statement in karpenter_statements(stack_json):
        actions = _actions(statement)
        conditions = json.dumps(statement.get("Condition", {}))
        writes = [a for a in actions if a.startswith("ec2:") and not a.startswith("ec2:Describe")]
        if writes:
            targets = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if all(t.endswith(untaggable) for t in targets):
                assert set(writes) == {"ec2:RunInstances", "ec2:CreateFleet"}, statement
            else:
                assert (
                    f"aws:RequestTag/{cluster}" in conditions or f"aws:ResourceTag/{cluster}" in conditions
                ), statement
                assert "karpenter.sh/nodepool" in conditions, statement
            if "ec2:CreateTags" in writes and f"aws:ResourceTag/{cluster}" not in conditions:
                # Tags on new resources only as part of creating them.
                assert "ec2:CreateAction" in conditions, statement
        profile_writes = [
            a for a in actions if "InstanceProfile" in a and not a.startswith(("iam:Get", "iam:List"))
        ]
        if profile_writes:
            assert cluster in conditions and "karpenter.k8s.aws/ec2nodeclass" in conditions, statement
            assert "topology.kubernetes.io/region" in conditions, statement


def test_karpenter_reads_passes_and_prices_as_upstream_scopes_them(stack_json):
    by_action: dict[str, list[dict]] = {}
    for statement in karpenter_statements(stack_json):
        for action in _actions(statement):
            by_action.setdefault(action, []).append(statement)
    (ssm,) = by_action["ssm:GetParameter"]
    assert ssm["Resource"] == "arn:aws:ssm:eu-west-1::parameter/aws/service/*"
    (pass_role,) = by_action["iam:PassRole"]
    assert pass_role["Resource"].startswith("${aws_iam_role.eks_karpenter-node-role")
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    (pricing,) = by_action["pricing:GetProducts"]
    assert "Condition" not in pricing  # the pricing API answers from us-east-1, not the cluster's region
    for read in ("ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypes", "ec2:DescribeSpotPriceHistory"):
        (statement,) = by_action[read]
        assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
    assert not [a for a in by_action if a.endswith("*")], "no wildcard actions"


def _depends_on(body) -> list[str]:
    return [d.split(".")[1] for d in body.get("depends_on", [])]


def test_control_plane_log_group_exists_before_the_cluster(stack_json):
    (logs,) = [
        n for n, g in resources(stack_json, "aws_cloudwatch_log_group").items() if "/aws/eks/" in g["name"]
    ]
    assert (
        resources(stack_json, "aws_cloudwatch_log_group")[logs]["name"] == "/aws/eks/gpu-dev-euw1-eks/cluster"
    )
    assert logs in _depends_on(one(stack_json, "aws_eks_cluster"))


def test_karpenter_starts_after_its_pod_identity(stack_json):
    (identity,) = [
        n
        for n, i in resources(stack_json, "aws_eks_pod_identity_association").items()
        if i["service_account"] == "karpenter"
    ]
    assert identity in _depends_on(releases(stack_json)["karpenter"])


def test_karpenter_crds_come_from_their_own_chart_which_upgrades_them(stack_json, helm, upstream):
    # Helm never upgrades a chart's crds/; the karpenter-crd chart ships them as templates instead.
    from tests.support.stacks import INSTANCES

    by_name = releases(stack_json)
    crd, karpenter = by_name["karpenter-crd"], by_name["karpenter"]
    ids = {r["name"]: n for n, r in resources(stack_json, "helm_release").items()}
    assert (crd["chart"], crd["repository"], crd["version"]) == (
        "karpenter-crd",
        karpenter["repository"],
        versions.KARPENTER_CHART.version,
    )
    assert karpenter["version"] == versions.KARPENTER_CHART.version
    assert karpenter.get("skip_crds") is True
    assert ids["karpenter-crd"] in _depends_on(karpenter)
    assert ids["karpenter"] in _depends_on(by_name["karpenter-node-pools"])
    stack = render.rendered(INSTANCES["eks-karpenter"])
    crds = {o["metadata"]["name"] for o in stack.release(ids["karpenter-crd"]).objects}
    assert {"nodepools.karpenter.sh", "nodeclaims.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"} <= crds
    main = stack.release(ids["karpenter"]).objects
    assert not [o for o in main if o["kind"] == "CustomResourceDefinition"]


def test_karpenter_sets_every_feature_gate_its_chart_renders(stack_json, upstream):
    template = (upstream / "charts/karpenter-1.14.1/templates/deployment.yaml").read_text()
    rendered = set(re.findall(r"\.Values\.settings\.featureGates\.(\w+)", template))
    gates = release_values(releases(stack_json)["karpenter"])["settings"]["featureGates"]
    assert rendered <= set(gates), "a gate left unset renders as an empty FEATURE_GATES value"
    assert gates["nodeRepair"] is True


def test_node_classes_leave_the_cluster_tag_to_karpenter(stack_json):
    objects = manifests_of(releases(stack_json)["karpenter-node-pools"])
    for node_class in by_kind(objects, "EC2NodeClass"):
        assert not [t for t in node_class["spec"]["tags"] if t.startswith("kubernetes.io/cluster/")]


def test_disruption_budgets_and_termination_grace_period(synth, upstream):
    quiet = DisruptionBudget(nodes="0", reasons=("Underutilized",), schedule="0 9 * * mon-fri", duration="8h")
    pools = (
        *SEED_NODE_POOLS[:2],
        replace(SEED_NODE_POOLS[2], budgets=(DisruptionBudget("1"), quiet), termination_grace_period="2h"),
    )
    synthesized = eks_stack(synth, node_pools=pools)
    objects = manifests_of(releases(synthesized)["karpenter-node-pools"])
    specs = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NodePool")}
    assert specs["general"]["disruption"]["budgets"] == [{"nodes": "10%"}]
    assert "terminationGracePeriod" not in specs["general"]["template"]["spec"]
    assert specs[GPU_POOL]["disruption"]["budgets"] == [
        {"nodes": "1"},
        {"nodes": "0", "reasons": ["Underutilized"], "schedule": "0 9 * * mon-fri", "duration": "8h"},
    ]
    assert specs[GPU_POOL]["template"]["spec"]["terminationGracePeriod"] == "2h"
    for manifest in objects:
        validate_manifest(manifest, upstream)


def test_nodepool_labels_outside_reserved_domains_reach_the_node_template(synth, upstream):
    labels = {"example.com/team": "ml", "node.kubernetes.io/role": "gpu", "tier": ""}
    pools = (*SEED_NODE_POOLS[:2], replace(SEED_NODE_POOLS[2], labels=labels))
    synthesized = eks_stack(synth, node_pools=pools)
    objects = manifests_of(releases(synthesized)["karpenter-node-pools"])
    specs = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NodePool")}
    assert specs[GPU_POOL]["template"]["metadata"]["labels"] == labels
    for manifest in objects:
        validate_manifest(manifest, upstream)


def test_nodepool_labels_the_crd_rejects_are_refused_at_synth(upstream):
    """Every restricted domain and label of the NodePool CRD's template-label rules (read from the
    CRD, so a new rule upstream is covered) is refused at synth, and a value fails at synth exactly
    when the CRD's value pattern and length refuse it."""
    path = upstream / "karpenter" / "karpenter.sh_nodepools.yaml"
    if not path.is_file():
        unavailable(f"no {path}")
    crd = yaml.safe_load(path.read_text())
    labels = _crd_property(crd, ("spec", "template", "metadata", "labels"))
    keys = []
    for rule in labels["x-kubernetes-validations"]:
        restricted = re.fullmatch(r'label (domain )?"([^"]+)" is restricted', rule["message"])
        assert restricted, f"a NodePool label rule synth does not know: {rule['message']}"
        keys.append(f"{restricted[2]}/team" if restricted[1] else restricted[2])
    assert len(keys) >= 4
    for key in keys:
        assert not _accepts(lambda k=key: pool(labels={k: "x"})), f"{key} accepted at synth"
    value = labels["additionalProperties"]
    value_pattern = re.compile(value["pattern"])
    for candidate in ("", "ml", "a.b_c-d", "-ml", "ml.", "a b", "x" * 63, "x" * 64, "é"):
        crd_says = bool(value_pattern.search(candidate)) and len(candidate) <= value["maxLength"]
        ours = _accepts(lambda v=candidate: pool(labels={"example.com/team": v}))
        assert ours == crd_says, f"label value {candidate!r}: synth {ours}, CRD {crd_says}"
    many = {f"example.com/l{i}": "x" for i in range(labels["maxProperties"] + 1)}
    assert not _accepts(lambda: pool(labels=many))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {"karpenter.sh/team": "ml"},
            r"^'p.labels' is 'karpenter.sh/team': use a label domain outside karpenter.sh, karpenter.k8s.aws, "
            r"kubernetes.io, k8s.io, which Karpenter and the kubelet reserve \(node.kubernetes.io is allowed\), "
            r"e.g. example.com/team$",
        ),
        (
            {"kubernetes.io/hostname": "n1"},
            r"^'p.labels' is 'kubernetes.io/hostname': use a label domain outside",
        ),
        ({"team.k8s.io/x": "ml"}, r"^'p.labels' is 'team.k8s.io/x': use a label domain outside"),
        (
            {"Example.com/team": "ml"},
            r"^'p.labels' is 'Example.com/team': give a label key such as example.com/team: an optional DNS "
            r"prefix, '/', and a name of at most 63 letters, digits, '-', '_' or '.'$",
        ),
        (
            {"example.com/team": "a b"},
            r"^'p.labels\[example.com/team\]' is 'a b': give a label value of at most 63 letters, digits, "
            r"'-', '_' or '.', starting and ending with a letter or digit$",
        ),
    ],
)
def test_nodepool_label_errors_are_one_line(labels, message):
    with pytest.raises(ConfigError, match=message) as error:
        pool(labels=labels)
    assert "\n" not in str(error.value)


def _crd_property(crd: dict, path: tuple[str, ...]) -> dict:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for key in path:
        schema = schema["items"] if key == "[]" else schema["properties"][key]
    return schema


DURATION_CASES = (
    "30s", "90s", "1m30s", "1h30m", "8h", "30m", "2h3h", "8h0m0s", "1h0s", "1m0s", "0s", "Never",
    "10", "1d", "", "h", "24h", "1h1m1s", "5m0s", "100h",
)  # fmt: skip


def _accepts(build) -> bool:
    try:
        build()
    except ConfigError:
        return False
    return True


def test_budget_and_grace_durations_are_what_the_nodepool_crd_accepts(upstream):
    """Synth accepts a budget duration, a budget schedule or a termination grace period exactly
    when the Karpenter 1.14 NodePool CRD's pattern does (the API server would refuse the release
    otherwise, inside an atomic Helm upgrade, naming the CRD field rather than the setting)."""
    path = upstream / "karpenter" / "karpenter.sh_nodepools.yaml"
    if not path.is_file():
        unavailable(f"no {path}")
    crd = yaml.safe_load(path.read_text())
    budget = _crd_property(crd, ("spec", "disruption", "budgets", "[]"))
    budget_pattern = re.compile(budget["properties"]["duration"]["pattern"])
    grace = _crd_property(crd, ("spec", "template", "spec", "terminationGracePeriod"))
    grace_pattern = re.compile(grace["pattern"])
    for value in DURATION_CASES:
        crd_says = bool(budget_pattern.search(value))
        ours = _accepts(lambda v=value: DisruptionBudget("0", schedule="0 9 * * mon-fri", duration=v))
        assert ours == crd_says, f"budget duration {value!r}: synth {ours}, CRD {crd_says}"
        crd_says = bool(grace_pattern.search(value))
        ours = _accepts(lambda v=value: pool(termination_grace_period=v))
        assert ours == crd_says, f"termination_grace_period {value!r}: synth {ours}, CRD {crd_says}"
    schedule_pattern = re.compile(budget["properties"]["schedule"]["pattern"])
    for schedule, valid in (
        ("0 9 * * mon-fri", True),
        ("@daily", True),
        ("*/5 * * * *", True),
        ("0 9 * *", False),
        ("daily", False),
        ("@sometimes", False),
        ("0 0 9 * * mon-fri", False),  # six fields: the pattern's .+ swallows one, cron refuses it
    ):
        ours = _accepts(lambda s=schedule: DisruptionBudget("0", schedule=s, duration="8h"))
        assert ours == valid, f"budget schedule {schedule!r}: synth {ours}"
        if valid:
            assert schedule_pattern.search(schedule), schedule


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: DisruptionBudget("0", schedule="0 9 * * *", duration="90s"), "'budget.duration' is '90s'"),
        (lambda: DisruptionBudget("0", schedule="0 9 * *", duration="8h"), "'budget.schedule' is '0 9 * *'"),
        (lambda: pool(termination_grace_period="Never"), ".termination_grace_period' is 'Never'"),
    ],
)
def test_a_duration_the_crd_refuses_fails_at_synth_in_one_line(build, setting):
    with pytest.raises(ConfigError) as raised:
        build()
    message = str(raised.value)
    assert setting in message and "\n" not in message, message


def _ami_parameter_problems(synthesized: dict) -> list[str]:
    """Each EC2NodeClass's alias must be read at plan for the cluster's Kubernetes version, in the
    variant each pool of the class runs (nvidia for GPU pools, standard otherwise), with constant
    arguments only, so Terraform reads it at plan and a missing one fails the plan: the parameter
    Karpenter 1.14.1 resolves the alias through (pkg/providers/amifamily/al2023.go, resolvePath;
    bottlerocket.go, DescribeImageQuery, the release without its leading v)."""
    (cluster,) = resources(synthesized, "aws_eks_cluster").values()
    k8s = cluster["version"]
    parameters = {
        f"data.aws_ssm_parameter.{n}": p["name"]
        for n, p in synthesized.get("data", {}).get("aws_ssm_parameter", {}).items()
    }
    release = releases(synthesized)["karpenter-node-pools"]
    objects = manifests_of(release)
    classes = {c["metadata"]["name"]: c for c in by_kind(objects, "EC2NodeClass")}
    found = []
    for pool in by_kind(objects, "NodePool"):
        class_name = pool["spec"]["template"]["spec"]["nodeClassRef"]["name"]
        (term,) = classes[class_name]["spec"]["amiSelectorTerms"]
        family, _, ami_release = term["alias"].partition("@")
        gpu = any(
            r["key"] == "karpenter.k8s.aws/instance-family"
            and any(f.startswith(("g", "p")) for f in r.get("values", []))
            for r in pool["spec"]["template"]["spec"]["requirements"]
        )
        variant = "nvidia" if gpu else "standard"
        if family == "bottlerocket":
            wanted = (
                f"/aws/service/bottlerocket/aws-k8s-{k8s}{'-nvidia' if gpu else ''}/x86_64/"
                f"{ami_release.removeprefix('v')}/image_id"
            )
        else:
            wanted = (
                f"/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/x86_64/{variant}/"
                f"amazon-eks-node-al2023-x86_64-{variant}-{k8s}-{ami_release}/image_id"
            )
        if wanted not in parameters.values():
            found.append(f"{pool['metadata']['name']}: no data.aws_ssm_parameter {wanted}")
    for address in parameters:
        body = synthesized["data"]["aws_ssm_parameter"][address.split(".")[-1]]
        if body.get("depends_on") or "${" in body["name"]:
            found.append(f"{address}: not read at plan (depends_on or a reference)")
    return found


@pytest.mark.parametrize("version", [None, "1.34"])
def test_each_node_class_ami_is_read_at_plan_for_the_clusters_version(synth, stack_json, version):
    synthesized = (
        stack_json if version is None else eks_stack(synth, kubernetes_version=version, extended_support=True)
    )
    assert _ami_parameter_problems(synthesized) == []
    names = [p["name"] for p in synthesized["data"]["aws_ssm_parameter"].values()]
    k8s = version or versions.EKS_KUBERNETES.version
    release = versions.EKS_NODE_AMI.version.partition("@")[2]
    assert any(
        f"/{k8s}/amazon-linux-2023/x86_64/nvidia/" in n and n.endswith(f"-{release}/image_id") for n in names
    )


def test_a_bottlerocket_release_is_read_at_plan_for_the_clusters_version():
    stack = Instance("eks-karpenter", "eks-karpenter", {"ami_alias": "bottlerocket@v1.50.0"})
    synthesized = json.loads(cdktf.Testing.synth(stack.build(cdktf.Testing.app())))
    assert _ami_parameter_problems(synthesized) == []
    names = sorted(p["name"] for p in synthesized["data"]["aws_ssm_parameter"].values())
    k8s = versions.EKS_KUBERNETES.version
    assert f"/aws/service/bottlerocket/aws-k8s-{k8s}-nvidia/x86_64/1.50.0/image_id" in names
    assert f"/aws/service/bottlerocket/aws-k8s-{k8s}/x86_64/1.50.0/image_id" in names


def test_the_ami_check_sees_a_pool_whose_ami_is_not_read(stack_json):
    broken = json.loads(json.dumps(stack_json))
    broken["data"]["aws_ssm_parameter"] = {
        n: p for n, p in broken["data"]["aws_ssm_parameter"].items() if "/nvidia/" not in p["name"]
    }
    assert any("no data.aws_ssm_parameter" in p for p in _ami_parameter_problems(broken))


def test_karpenter_chart_runs_two_replicas_on_system_nodes(stack_json):
    karpenter = releases(stack_json)["karpenter"]
    assert (karpenter["repository"], karpenter["version"]) == ("oci://public.ecr.aws/karpenter", "1.14.1")
    values = release_values(karpenter)
    assert values["replicas"] == 2
    assert values["tolerations"] == [
        {"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert values["settings"]["clusterName"] == "gpu-dev-euw1-eks"


def test_karpenter_requests_what_upstream_recommends_and_knows_its_region(stack_json, helm, upstream):
    """A guaranteed 1 CPU and 1Gi per replica (Karpenter's getting-started install), and
    AWS_REGION: the system nodes' metadata hop limit of 1 keeps the SDK from reading the region."""
    controller = release_values(releases(stack_json)["karpenter"])["controller"]
    assert controller["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in controller["env"]
    template = one(stack_json, "aws_launch_template")
    assert template["metadata_options"]["http_put_response_hop_limit"] == 1
    from tests.support.stacks import INSTANCES

    rendered = render.rendered(INSTANCES["eks-karpenter"])
    (deployment,) = [
        o
        for _, o in rendered.objects()
        if o.get("kind") == "Deployment" and o["metadata"]["name"] == "karpenter"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}


def test_karpenter_may_launch_into_a_placement_group_as_upstream_allows(stack_json):
    """Karpenter 1.14's CloudFormation policy: RunInstances/CreateFleet on placement groups and
    DescribePlacementGroups in the region."""
    statements = {s["Sid"]: s for s in karpenter_statements(stack_json)}
    assert (
        "arn:aws:ec2:eu-west-1:*:placement-group/*"
        in statements["AllowScopedEC2InstanceAccessActions"]["Resource"]
    )
    assert "ec2:DescribePlacementGroups" in statements["AllowRegionalReadActions"]["Action"]


def test_node_repair_comes_with_the_node_monitoring_agent_it_reads(synth, stack_json):
    """Karpenter's node repair sees a failed GPU only through the agent's AcceleratedHardwareReady
    condition; without node repair the agent is not installed."""
    addons = {a["addon_name"]: a for a in resources(stack_json, "aws_eks_addon").values()}
    agent = addons["eks-node-monitoring-agent"]
    assert any(d.startswith("aws_eks_node_group.") for d in agent["depends_on"])
    assert agent["addon_version"].startswith("${data.aws_eks_addon_version.")
    gates = release_values(releases(stack_json)["karpenter"])["settings"]["featureGates"]
    assert gates["nodeRepair"] is True
    without = eks_stack(synth, node_repair=False)
    assert "eks-node-monitoring-agent" not in {
        a["addon_name"] for a in resources(without, "aws_eks_addon").values()
    }
    gates = release_values(releases(without)["karpenter"])["settings"]["featureGates"]
    assert gates["nodeRepair"] is False


def _node_classes(settings: dict) -> dict[str, dict]:
    stack = Instance("eks-karpenter", "eks-karpenter", settings).build(cdktf.Testing.app())
    objects = manifests_of(releases(json.loads(cdktf.Testing.synth(stack)))["karpenter-node-pools"])
    return {c["metadata"]["name"]: c for c in by_kind(objects, "EC2NodeClass")}


@pytest.mark.parametrize("alias", [versions.EKS_NODE_AMI.version, "bottlerocket@v1.50.0"])
def test_images_and_containers_get_the_node_class_volume_on_either_ami_family(alias, upstream):
    """The volume sized for the GPU images is the one the AMI family stores them on: AL2023's root
    /dev/xvda; Bottlerocket's data volume /dev/xvdb, beside its OS volume /dev/xvda at Karpenter's
    default 4Gi (aws/karpenter-provider-aws v1.14.1 pkg/providers/amifamily/bottlerocket.go).
    Mappings given replace Karpenter's defaults, so a Bottlerocket class with /dev/xvda alone would
    put 200Gi on the OS and no data volume."""
    from gpu_constructs.compute.eks.nodepools import SEED_NODE_CLASSES

    sizes = {c.name: f"{c.volume_size_gi}Gi" for c in SEED_NODE_CLASSES}
    classes = _node_classes({"ami_alias": alias})
    assert sizes.keys() == classes.keys()
    for name, node_class in classes.items():
        validate_manifest(node_class, upstream)
        volumes = {m["deviceName"]: m["ebs"] for m in node_class["spec"]["blockDeviceMappings"]}
        assert all(v["encrypted"] and v["deleteOnTermination"] for v in volumes.values())
        # every volume within gp3's ratios, which EC2 checks at launch and the CRD does not
        for ebs in volumes.values():
            size = int(ebs["volumeSize"].removesuffix("Gi"))
            if "iops" in ebs:
                assert ebs["iops"] <= 500 * size and ebs["throughput"] * 4 <= ebs["iops"], name
        if alias.startswith("bottlerocket@"):
            assert list(volumes) == ["/dev/xvda", "/dev/xvdb"], name
            assert volumes["/dev/xvda"]["volumeSize"] == "4Gi"
            # gp3's baseline: 3000 provisioned IOPS would exceed 500 per GiB of the 4 GiB volume
            assert "iops" not in volumes["/dev/xvda"] and "throughput" not in volumes["/dev/xvda"]
            assert volumes["/dev/xvdb"]["volumeSize"] == sizes[name]
        else:
            assert list(volumes) == ["/dev/xvda"], name
            assert volumes["/dev/xvda"]["volumeSize"] == sizes[name]
    data = "/dev/xvdb" if alias.startswith("bottlerocket@") else "/dev/xvda"
    gpu = {m["deviceName"]: m["ebs"] for m in classes["gpu"]["spec"]["blockDeviceMappings"]}[data]
    assert (gpu["volumeSize"], gpu["iops"], gpu["throughput"]) == ("200Gi", 4000, 200)


@pytest.mark.parametrize("replicas", [1, 4])
def test_bottlerocket_gpu_nodes_share_their_gpus_through_their_own_device_plugin(replicas, upstream):
    """Bottlerocket's NVIDIA variants run NVIDIA's device plugin themselves: the stack installs no
    DaemonSet and gives time-slicing to the node's settings in the GPU class's userData, which
    Karpenter merges its own settings.kubernetes into. The replicas keep the name nvidia.com/gpu
    (Bottlerocket's template would rename them nvidia.com/gpu.shared by default), as the AL2023
    DaemonSet's config does."""
    import tomllib

    settings = {"ami_alias": "bottlerocket@v1.50.0", "time_slicing_replicas": replicas}
    stack = Instance("eks-karpenter", "eks-karpenter", settings).build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    assert "nvidia-device-plugin" not in releases(synthesized)
    objects = manifests_of(releases(synthesized)["karpenter-node-pools"])
    classes = {c["metadata"]["name"]: c for c in by_kind(objects, "EC2NodeClass")}
    for node_class in classes.values():
        validate_manifest(node_class, upstream)
    assert "userData" not in classes["default"]["spec"]  # its pools run the aws-k8s variant
    if replicas == 1:
        assert "userData" not in classes["gpu"]["spec"]
        return
    plugin = tomllib.loads(classes["gpu"]["spec"]["userData"])["settings"]["kubelet-device-plugins"]
    assert plugin == {
        "nvidia": {
            "device-sharing-strategy": "time-slicing",
            "time-slicing": {
                "replicas": replicas,
                "rename-by-default": False,
                "fail-requests-greater-than-one": False,
            },
        }
    }
    workload = releases(synthesized)["tinyllama-inference"]
    assert not any("nvidia-device-plugin" in d for d in workload.get("depends_on", []))


def test_the_device_plugin_is_the_stacks_on_al2023_and_the_images_on_bottlerocket():
    from gpu_constructs.cluster import Manager
    from gpu_constructs.compute.base import compute_of

    def compute(alias: str):
        stack = Instance("eks-karpenter", "eks-karpenter", {"ami_alias": alias}).build(cdktf.Testing.app())
        return compute_of(stack)

    assert compute(versions.EKS_NODE_AMI.version).platform.device_plugin is Manager.STACK
    assert compute("bottlerocket@v1.50.0").platform.device_plugin is Manager.IMAGE


def test_cloudwatch_logs_may_use_the_cluster_key_only_for_the_stacks_log_groups(stack_json):
    keys = [k for n, k in resources(stack_json, "aws_kms_key").items() if n.startswith("eks_kms")]
    (key,) = keys
    statements = {s["Sid"]: s for s in json.loads(key["policy"])["Statement"]}
    logs = statements["CloudWatchLogs"]
    allowed = logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    groups = [
        g
        for g in resources(stack_json, "aws_cloudwatch_log_group").values()
        if "eks_kms" in g.get("kms_key_id", "")
    ]
    assert len(groups) == 2
    assert sorted(allowed) == sorted(
        f"arn:aws:logs:eu-west-1:${{var.aws_account_id}}:log-group:{g['name']}" for g in groups
    )


def test_node_classes_and_pools_as_the_seed_says(stack_json, upstream):
    objects = manifests_of(releases(stack_json)["karpenter-node-pools"])
    classes = {c["metadata"]["name"]: c["spec"] for c in by_kind(objects, "EC2NodeClass")}
    assert classes["default"]["blockDeviceMappings"][0]["ebs"] | {} == {
        "volumeSize": "50Gi",
        "volumeType": "gp3",
        "iops": 3000,
        "throughput": 125,
        "encrypted": True,
        "deleteOnTermination": True,
    }
    assert classes["gpu"]["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "200Gi"
    assert classes["gpu"]["blockDeviceMappings"][0]["ebs"]["iops"] == 4000
    assert all(
        c["metadataOptions"]["httpTokens"] == "required"
        and c["metadataOptions"]["httpPutResponseHopLimit"] == 1
        for c in classes.values()
    )
    # A pinned release, the same for every class: al2023@latest would drift every node on each
    # AMI release (the EC2NodeClass CRD's own description says so).
    for spec in classes.values():
        assert spec["amiSelectorTerms"] == [{"alias": versions.EKS_NODE_AMI.version}]
    assert re.fullmatch(r"al2023@v20[0-9]{6}", versions.EKS_NODE_AMI.version)
    pools = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NodePool")}
    assert pools["general"]["disruption"]["consolidateAfter"] == "1m"
    assert pools["general"]["limits"] == {"cpu": "50", "memory": "100Gi"}
    assert pools["critical"]["template"]["spec"]["taints"] == [
        {"key": "workload", "value": "critical", "effect": "NoSchedule"}
    ]
    critical_capacity = pools["critical"]["template"]["spec"]["requirements"][2]
    assert critical_capacity == {
        "key": "karpenter.sh/capacity-type",
        "operator": "In",
        "values": ["on-demand"],
    }
    gpu = pools[GPU_POOL]
    assert gpu["limits"] == {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "4"}
    assert gpu["template"]["metadata"]["labels"] == {"nodepool": GPU_POOL}
    assert gpu["template"]["spec"]["requirements"][1]["values"] == ["xlarge", "2xlarge"]
    assert gpu["disruption"]["consolidateAfter"] == "5m"
    for manifest in objects:
        validate_manifest(manifest, upstream)


def test_the_gpu_pool_never_evicts_a_running_replica_for_consolidation_or_drift(stack_json, upstream):
    """The inference workload may run a single replica: Karpenter may remove an empty GPU node
    (that is the scale to zero) but must not consolidate or drift-replace one with the replica on
    it. For each disruption reason, the most restrictive budget naming it (or naming none) applies."""
    objects = manifests_of(releases(stack_json)["karpenter-node-pools"])
    pools = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NodePool")}
    budgets = pools[GPU_POOL]["disruption"]["budgets"]

    def allowed(reason: str) -> str:
        applying = [b["nodes"] for b in budgets if reason in b.get("reasons", [reason])]
        assert not any("schedule" in b for b in budgets), "a scheduled budget applies only part time"
        # One GPU node per replica: 0 nodes, or a share of them, are what matter here.
        return min(applying, key=lambda n: -1 if n == "0" else int(n.rstrip("%")))

    assert allowed("Underutilized") == "0" and allowed("Drifted") == "0"
    assert allowed("Empty") == "100%"
    for manifest in by_kind(objects, "NodePool"):
        validate_manifest(manifest, upstream)


def test_device_plugin_only_on_gpu_nodes_and_workload_placed_by_the_contract(stack_json):
    plugin = release_values(releases(stack_json)["nvidia-device-plugin"])
    assert plugin["nodeSelector"] == {"karpenter.sh/nodepool": GPU_POOL, "nodepool": GPU_POOL}
    assert plugin["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert plugin["affinity"] is None
    (deployment,) = by_kind(manifests_of(releases(stack_json)["tinyllama-inference"]), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"karpenter.sh/nodepool": GPU_POOL, "nodepool": GPU_POOL}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "runtimeClassName" not in pod  # the AL2023 NVIDIA AMI makes nvidia the default runtime


def test_inference_release_waits_long_enough_for_a_start_from_zero_gpu_nodes(stack_json):
    release = releases(stack_json)["tinyllama-inference"]
    (deployment,) = by_kind(manifests_of(release), "Deployment")
    startup = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    model_load = startup["failureThreshold"] * startup["periodSeconds"]
    node_launch_and_image_pull = 600  # Karpenter launch, AMI boot and join, device plugin, image pull
    assert release["atomic"] is True
    assert release["timeout"] >= model_load + node_launch_and_image_pull


@pytest.fixture(scope="module")
def always_on_json() -> dict:
    """The stack with the inference workload kept at one replica or more (the HPA)."""
    pools = tuple(replace(p, scale_to_zero=False) for p in SEED_NODE_POOLS)
    instance = Instance("eks-karpenter", "eks-karpenter", {"scale_to_zero": False, "node_pools": pools})
    return json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))


def test_alb_checks_the_path_the_readiness_probe_checks(always_on_json):
    objects = manifests_of(releases(always_on_json)["tinyllama-inference"])
    (deployment,) = by_kind(objects, "Deployment")
    (ingress,) = by_kind(objects, "Ingress")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"] == probe


def test_the_autoscaler_has_a_metrics_source(always_on_json, stack_json):
    objects = manifests_of(releases(always_on_json)["tinyllama-inference"])
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    # The HPA owns the replica count: a spec.replicas from the chart would reset it on every upgrade.
    assert "replicas" not in by_kind(objects, "Deployment")[0]["spec"]
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource"}  # served by metrics-server
    (addon,) = [
        a for a in resources(stack_json, "aws_eks_addon").values() if a["addon_name"] == "metrics-server"
    ]
    (node_pools,) = [
        n for n, r in resources(stack_json, "helm_release").items() if r["name"] == "karpenter-node-pools"
    ]
    assert _depends_on(addon) == [node_pools]


def test_destroy_keeps_what_nodes_controllers_and_objects_need_until_they_are_gone(helm, upstream):
    from tests.support.stacks import INSTANCES

    stack = render.rendered(INSTANCES["eks-karpenter"])
    needs_checked = {r.name for r in stack.releases}
    assert {"karpenter", "karpenter-node-pools", "aws-load-balancer-controller"} <= needs_checked
    assert destroy_order_problems(stack) == []


DATA_REFERENCE = re.compile(r"\$\{(?:nonsensitive\()?data\.([a-z0-9_]+)\.([A-Za-z0-9_-]+)\.(\w+)\)?\}")
# EKS-optimized AMI release parameters by node group AMI type (EKS user guide, "Retrieve recommended
# Amazon Linux AMI IDs"; terraform-aws-eks v21 modules/eks-managed-node-group reads the same).
AMI_RELEASE_PARAMETER = {
    "AL2023_x86_64_STANDARD": "/aws/service/eks/optimized-ami/{}/amazon-linux-2023/x86_64/standard/"
    "recommended/release_version",
}


def data_source(synthesized: dict, reference: str) -> tuple[dict, str]:
    """The data source body a ``${data.type.name.attr}`` reference reads, and the attribute."""
    match = DATA_REFERENCE.fullmatch(reference)
    assert match, f"{reference!r} is not read from a data source"
    kind, name, attribute = match.groups()
    return synthesized["data"][kind][name], attribute


@pytest.mark.parametrize("version", ["1.35", "1.34"])
def test_nodes_and_add_ons_follow_the_cluster_version(synth, version):
    synthesized = eks_stack(synth, kubernetes_version=version, extended_support=version == "1.34")
    (cluster_name,) = resources(synthesized, "aws_eks_cluster")
    cluster_version = f"${{aws_eks_cluster.{cluster_name}.version}}"
    assert resources(synthesized, "aws_eks_cluster")[cluster_name]["version"] == version
    for group in resources(synthesized, "aws_eks_node_group").values():
        assert group["version"] == cluster_version
        parameter, attribute = data_source(synthesized, group["release_version"])
        assert (parameter["name"], attribute) == (
            AMI_RELEASE_PARAMETER[group["ami_type"]].format(version),
            "value",
        )
    addons = resources(synthesized, "aws_eks_addon").values()
    assert {a["addon_name"] for a in addons} >= {"vpc-cni", "kube-proxy", "coredns", "metrics-server"}
    for addon in addons:
        offered, attribute = data_source(synthesized, addon["addon_version"])
        assert attribute == "version"
        assert offered == {
            "addon_name": addon["addon_name"],
            "kubernetes_version": cluster_version,
            "most_recent": True,
        }


def test_every_add_on_takes_over_and_updates_its_objects_over_conflicts(stack_json):
    """EKS installs self-managed vpc-cni, kube-proxy and CoreDNS on a new cluster (the provider's
    bootstrap_self_managed_addons defaults to true): creating the managed add-ons over them with
    conflicts left unresolved "might fail" (CreateAddon resolveConflicts NONE), and so might each
    version update on a Kubernetes bump (UpdateAddon NONE). The provider sends no resolveConflicts
    unless set (terraform-provider-aws internal/service/eks/addon.go); terraform-aws-eks v20.37.2
    sets OVERWRITE for both where self-managed add-ons are bootstrapped (main.tf
    resolve_conflicts_on_create_default). The stack edits no add-on object outside
    configuration_values, so OVERWRITE only ever restores EKS's own values."""
    addons = resources(stack_json, "aws_eks_addon")
    assert {a["addon_name"] for a in addons.values()} >= {
        "vpc-cni",
        "kube-proxy",
        "coredns",
        "eks-pod-identity-agent",
        "aws-ebs-csi-driver",
    }
    for name, addon in addons.items():
        assert addon.get("resolve_conflicts_on_create") == "OVERWRITE", name
        assert addon.get("resolve_conflicts_on_update") == "OVERWRITE", name


def test_rds_is_private_encrypted_protected_and_keeps_no_password(stack_json):
    db = one(stack_json, "aws_db_instance")
    assert (db["storage_encrypted"], db["publicly_accessible"], db["deletion_protection"]) == (
        True,
        False,
        True,
    )
    assert db["manage_master_user_password"] is True and "password" not in db
    assert db["backup_retention_period"] == 30


def test_rds_snapshots_outlive_the_stack_under_their_own_key_and_a_name_made_once(stack_json):
    db = one(stack_json, "aws_db_instance")
    keys = resources(stack_json, "aws_kms_key")
    (rds_key,) = [k for k, v in keys.items() if "RDS" in v["description"]]
    # Storage, snapshots and Performance Insights under the database's own key, which a destroy
    # cannot delete (the cluster's key is scheduled for deletion by the same destroy).
    assert db["kms_key_id"] == db["performance_insights_kms_key_id"] == f"${{aws_kms_key.{rds_key}.arn}}"
    assert keys[rds_key]["lifecycle"]["prevent_destroy"] is True
    # The final snapshot's name carries an id made when the stack is created (no clock at synth).
    (suffix,) = [n for n in resources(stack_json, "terraform_data") if "final-snapshot" in n]
    assert db["skip_final_snapshot"] is False
    assert db["final_snapshot_identifier"] == f"gpu-dev-euw1-eks-db-final-${{terraform_data.{suffix}.id}}"
    # The automated backups outlive the instance too: point-in-time restore to before the deletion.
    assert db["delete_automated_backups"] is False
    (monitoring,) = [
        k
        for k, v in resources(stack_json, "aws_iam_role_policy_attachment").items()
        if "RDSEnhanced" in v["policy_arn"]
    ]
    assert f"aws_iam_role_policy_attachment.{monitoring}" in db["depends_on"]


def test_rds_retention_and_deletion_protection_are_settings():
    instance = Instance(
        "e", "eks-karpenter", {"rds_backup_retention_days": 14, "rds_deletion_protection": False}
    )
    db = one(json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app()))), "aws_db_instance")
    assert (db["backup_retention_period"], db["deletion_protection"]) == (14, False)


def _by_logical_id(stack_json) -> dict[str, str]:
    return {r["name"]: f"helm_release.{n}" for n, r in resources(stack_json, "helm_release").items()}


def test_app_domain_points_at_the_alb_through_external_dns_in_the_stacks_zone(stack_json):
    external_dns = releases(stack_json)["external-dns"]
    assert (external_dns["chart"], external_dns["version"], external_dns["repository"]) == (
        "external-dns",
        versions.EXTERNAL_DNS_CHART.version,
        versions.REPO_EXTERNAL_DNS,
    )
    values = release_values(external_dns)
    assert values["sources"] == ["ingress"] and values["provider"] == {"name": "aws"}
    # The zone, by id; no domain filter (a changed app_domain must leave the old name in its scope).
    assert "domainFilters" not in values
    assert values["extraArgs"] == ["--zone-id-filter=${var.route53_zone_id}"]
    # sync deletes what it made once the Ingress goes, and only that (TXT owner: this cluster).
    assert (values["policy"], values["registry"], values["txtOwnerId"]) == ("sync", "txt", "gpu-dev-euw1-eks")
    assert values["nodeSelector"] == {"role": "system"}
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in values["env"]
    (policy,) = [
        json.loads(r["policy"])
        for n, r in resources(stack_json, "aws_iam_role_policy").items()
        if n.startswith("external-dns_")
    ]
    writes = [s for s in policy["Statement"] if "route53:ChangeResourceRecordSets" in s["Action"]]
    assert [w["Resource"] for w in writes] == ["arn:aws:route53:::hostedzone/${var.route53_zone_id}"]
    unscoped = [s for s in policy["Statement"] if s["Resource"] == "*"]
    assert [s["Action"] for s in unscoped] == ["route53:ListHostedZones"]
    # Its role through Pod Identity, for its ServiceAccount.
    (identity,) = [
        a
        for n, a in resources(stack_json, "aws_eks_pod_identity_association").items()
        if n.startswith("external-dns")
    ]
    assert (identity["namespace"], identity["service_account"]) == ("kube-system", "external-dns")
    # Destroy: the Ingress goes while ExternalDNS still runs (and deletes the record), and
    # ExternalDNS while its credentials still exist.
    assert record_cleanup_problems(stack_json) == []
    assert any(d.startswith("aws_iam_role_policy.external-dns") for d in external_dns["depends_on"])
    assert any(
        d.startswith("aws_eks_pod_identity_association.external-dns") for d in external_dns["depends_on"]
    )


def record_cleanup_problems(synthesized: dict) -> list[str]:
    """On destroy, every release with an Ingress (ExternalDNS's source) must go a sync interval and
    a margin before ExternalDNS: through a destroy-time pause that depends on the ExternalDNS
    release and that the Ingress release depends on (tests/support/lifecycle/graph.py: A is destroyed
    before B iff A depends on B)."""
    from gpu_constructs.compute.eks.services import EXTERNAL_DNS_INTERVAL_S
    from tests.support.lifecycle import graph

    by_name = releases(synthesized)
    ids = _by_logical_id(synthesized)
    external_dns = ids["external-dns"]
    interval = release_values(by_name["external-dns"]).get("interval", "1m")
    assert interval in ("1m", f"{EXTERNAL_DNS_INTERVAL_S}s"), interval
    pauses = []
    for name, body in resources(synthesized, "terraform_data").items():
        for provisioner in body.get("provisioner", []):
            local = provisioner.get("local-exec", {})
            if local.get("when") == "destroy" and (m := re.fullmatch(r"sleep (\S+)", local["command"])):
                seconds = int(body["input"]["seconds"]) if "self.input" in m.group(1) else int(m.group(1))
                if seconds >= EXTERNAL_DNS_INTERVAL_S + 10 and graph.depends_on(
                    synthesized, f"terraform_data.{name}", external_dns
                ):
                    pauses.append(f"terraform_data.{name}")
    found = []
    for name, release in by_name.items():
        # An Ingress rendered from the manifests chart, or a chart's ingress values (Grafana's).
        if "ingressClassName" in json.dumps(release):
            address = ids[name]
            if not any(graph.depends_on(synthesized, address, p) for p in pauses):
                found.append(f"{address}: reaches ExternalDNS with no destroy-time pause between")
    return found


def test_a_destroy_leaves_external_dns_a_sync_after_the_last_ingress(stack_json):
    grafana = Instance("eks-karpenter", "eks-karpenter", {"grafana_host": "grafana.example.com"}).build(
        cdktf.Testing.app()
    )
    with_grafana = json.loads(cdktf.Testing.synth(grafana))
    assert record_cleanup_problems(with_grafana) == []
    # Straight to ExternalDNS, as before the pause: both Ingress releases are found.
    broken = json.loads(json.dumps(with_grafana))
    pause = next(n for n in resources(broken, "terraform_data") if "record-cleanup" in n)
    for release in resources(broken, "helm_release").values():
        release["depends_on"] = [
            _by_logical_id(with_grafana)["external-dns"] if d == f"terraform_data.{pause}" else d
            for d in release.get("depends_on", [])
        ]
    assert len(record_cleanup_problems(broken)) == 2, record_cleanup_problems(broken)


def test_external_dns_is_the_same_whatever_the_host_names():
    """ExternalDNS's scope is the zone and its owner id, never the host names: a changed app_domain
    or grafana_host leaves its release as it is, and the old name's records, still owned and no
    longer asked for by an Ingress, are deleted by its sync (external-dns v0.21.0 plan/plan.go:
    records outside the domain filters are never deleted, so filters naming the hosts would
    strand them)."""

    def external_dns(settings: dict) -> dict:
        stack = Instance("eks-karpenter", "eks-karpenter", settings).build(cdktf.Testing.app())
        release = releases(json.loads(cdktf.Testing.synth(stack)))["external-dns"]
        return {k: v for k, v in release.items() if k != "depends_on"}

    plain = external_dns({})
    assert plain == external_dns({"grafana_host": "grafana.example.com"})
    assert "app_domain" not in json.dumps(plain)


def test_external_dns_renders_one_zone_no_domain_filter_and_finds_the_alb_ingress(helm, upstream):
    """The chart turns the values into ExternalDNS's flags, and the Ingress of app_domain is one
    it reads (no annotation or label filter, the ingress source)."""
    from tests.support.stacks import INSTANCES

    rendered = render.rendered(INSTANCES["eks-karpenter"])
    (deployment,) = [
        o
        for _, o in rendered.objects()
        if o.get("kind") == "Deployment" and o["metadata"]["name"] == "external-dns"
    ]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "external-dns"
    (container,) = spec["containers"]
    args = container["args"]
    for flag in (
        "--source=ingress",
        "--policy=sync",
        "--registry=txt",
        "--txt-owner-id=gpu-dev-euw1-eks",
        "--provider=aws",
    ):
        assert flag in args, args
    # One zone, by id, and no domain filter: ExternalDNS plans only over records matching its
    # domain filters (external-dns v0.21.0 plan/plan.go filterRecordsForPlan), so a filter naming
    # app_domain would leave the old name's records in the zone when app_domain changes. An empty
    # filter matches every zone name (endpoint/domain_filter.go), so the zone-id filter selects it.
    assert [a for a in args if a.startswith("--zone-id-filter=")] == ["--zone-id-filter=placeholder"]
    assert not [a for a in args if a.startswith(("--domain-filter", "--regex-domain-filter"))], args
    assert not any(a.startswith(("--annotation-filter", "--label-filter")) for a in args)
    ingresses = [o for _, o in rendered.objects() if o.get("kind") == "Ingress"]
    assert any(
        o["metadata"].get("annotations", {}).get("alb.ingress.kubernetes.io/scheme") for o in ingresses
    )


def test_the_load_balancer_controllers_crds_are_applied_at_the_pinned_chart_before_it(
    stack_json, upstream, tmp_path
):
    """The step's script, run by bash against stand-ins: ``helm show crds`` prints the pinned
    chart's crds/ (from ../shared/upstream), and kubectl must receive all of them in a server-side
    apply; a failed download stops it before kubectl. Ordered after the cluster, before the release."""
    from tests.support.lifecycle import crds

    chart = upstream / "charts" / f"aws-load-balancer-controller-{versions.AWS_LB_CONTROLLER_CHART.version}"
    if not chart.is_dir():
        unavailable(f"no {chart}")
    (step_id, step) = next(
        (n, b)
        for n, b in resources(stack_json, "terraform_data").items()
        if n.startswith("alb-controller_crds")
    )
    release = releases(stack_json)["aws-load-balancer-controller"]
    assert f"terraform_data.{step_id}" in release["depends_on"]
    assert step["triggers_replace"]["version"] == versions.AWS_LB_CONTROLLER_CHART.version
    (provisioner,) = step["provisioner"]
    local = provisioner["local-exec"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "aws": 'echo "aws $*" >>"$LOG"',
        "helm": 'echo "helm $*" >>"$LOG"; [ "$1" = show ] || exit 0; [ -z "${HELM_FAIL:-}" ] || exit 1; '
        f'cat "{chart}"/crds/*.yaml',
        "kubectl": 'echo "kubectl $* KUBECONFIG=$KUBECONFIG" >>"$LOG"; cat >"$APPLIED"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "LOG": str(tmp_path / "log"),
            "APPLIED": str(tmp_path / "applied.yaml"),
            **local["environment"],
            **extra,
        }
        return subprocess.run(
            [*local["interpreter"], local["command"]], env=env, capture_output=True, text=True, check=False
        )

    result = run()
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "log").read_text()
    assert (
        f"helm show crds aws-load-balancer-controller --version {versions.AWS_LB_CONTROLLER_CHART.version} "
        f"--repo {versions.REPO_EKS_CHARTS}" in log
    )
    assert "kubectl apply --server-side --force-conflicts" in log and "KUBECONFIG=.terraform/" in log
    applied = {
        o["metadata"]["name"]
        for o in yaml.safe_load_all((tmp_path / "applied.yaml").read_text())
        if o and o.get("kind") == "CustomResourceDefinition"
    }
    assert applied == crds.chart_crd_files(chart)
    assert {"targetgroupbindings.elbv2.k8s.aws", "ingressclassparams.elbv2.k8s.aws"} <= applied
    (tmp_path / "log").unlink()
    failed = run(HELM_FAIL="1")
    assert failed.returncode != 0 and "kubectl" not in (tmp_path / "log").read_text()


def test_load_balancer_controller_values(stack_json):
    values = release_values(releases(stack_json)["aws-load-balancer-controller"])
    assert values["clusterName"] == "gpu-dev-euw1-eks" and values["region"] == "eu-west-1"
    assert values["nodeSelector"] == {"role": "system"} and values["replicaCount"] == 2
    assert set(values) == {
        "clusterName",
        "region",
        "vpcId",
        "replicaCount",
        "serviceAccount",
        "nodeSelector",
        "tolerations",
        "enableServiceMutatorWebhook",
    }
    assert values["enableServiceMutatorWebhook"] is False


def service_create_fail_webhooks(objects) -> list[str]:
    """Mutating or validating webhooks that fail closed and intercept every core/v1 Service CREATE."""
    found = []
    for obj in objects:
        if obj.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        for hook in obj.get("webhooks") or []:
            if hook.get("failurePolicy", "Fail") != "Fail":
                continue
            for rule in hook.get("rules") or []:
                if (
                    set(rule.get("apiGroups", [])) & {"", "*"}
                    and set(rule.get("resources", [])) & {"services", "*"}
                    and set(rule.get("operations", [])) & {"CREATE", "*"}
                ):
                    found.append(f"{obj['kind']}/{obj['metadata']['name']}: {hook['name']}")
    return found


def test_no_webhook_fails_service_creation_while_the_load_balancer_controller_starts(helm, upstream):
    # The chart's service mutator (mservice.elbv2.k8s.aws, failurePolicy Fail, every Service CREATE)
    # refuses each Service until the controller's pods serve it, so releases applied beside the
    # controller fail at random (kubernetes-sigs/aws-load-balancer-controller#4140). The stack has no
    # Service of type LoadBalancer for it to default, so the chart's enableServiceMutatorWebhook is off.
    from tests.support.stacks import INSTANCES

    stack = render.rendered(INSTANCES["eks-karpenter"])
    (controller,) = [r for r in stack.releases if r.chart == "aws-load-balancer-controller"]
    assert [o["kind"] for o in controller.objects if "Webhook" in o["kind"]], "the chart renders webhooks"
    assert service_create_fail_webhooks(controller.objects) == []
    services = [o for _, o in stack.objects() if o.get("kind") == "Service"]
    assert not [s for s in services if s.get("spec", {}).get("type") == "LoadBalancer"]


def test_the_webhook_check_sees_the_charts_default_service_mutator(helm, upstream):
    from tests.support.stacks import INSTANCES

    stack = render.rendered(INSTANCES["eks-karpenter"])
    (controller,) = [r for r in stack.releases if r.chart == "aws-load-balancer-controller"]
    values = {k: v for k, v in controller.values().items() if k != "enableServiceMutatorWebhook"}
    default = replace(controller, values_documents=[yaml.safe_dump(values)], objects=[])
    objects = render.parse_objects(render.helm_template(default, stack.kube_version, [], helm))
    assert service_create_fail_webhooks(objects) == [
        "MutatingWebhookConfiguration/aws-load-balancer-webhook: mservice.elbv2.k8s.aws"
    ]


def test_load_balancer_controller_changes_only_what_carries_its_cluster_tag(stack_json):
    (policy,) = [
        json.loads(r["policy"])
        for name, r in resources(stack_json, "aws_iam_role_policy").items()
        if name.startswith("alb-controller")
    ]
    statements = policy["Statement"]
    actions = [
        action
        for statement in statements
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    ]
    # Reads the controller needs besides the Describe calls.
    assert {
        "ec2:GetSecurityGroupsForVpc",
        "ec2:GetCoipPoolUsage",
        "cognito-idp:DescribeUserPoolClient",
    } <= set(actions)
    assert not [a for a in actions if a.endswith(":*")], "no whole-service wildcards"
    destructive = (
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "ec2:DeleteSecurityGroup",
        "elasticloadbalancing:CreateLoadBalancer",
    )
    for statement in statements:
        if set(destructive) & set(statement["Action"]):
            assert "elbv2.k8s.aws/cluster" in json.dumps(statement["Condition"]["Null"]), statement
        # In the stack's region, but for IAM and Shield, whose one endpoint is in us-east-1.
        services = {a.split(":")[0] for a in _actions(statement)}
        if services <= {"iam", "shield"}:
            assert "aws:RequestedRegion" not in json.dumps(statement.get("Condition", {})), statement
        else:
            assert not services & {"iam", "shield"}, statement
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == "eu-west-1"
    (untag,) = [
        s
        for s in statements
        if "elasticloadbalancing:RemoveTags" in s["Action"] and "Null" in s.get("Condition", {})
    ]
    # The cluster tag itself cannot be added to or removed from an existing load balancer.
    assert untag["Condition"]["Null"] == {
        "aws:RequestTag/elbv2.k8s.aws/cluster": "true",
        "aws:ResourceTag/elbv2.k8s.aws/cluster": "false",
    }


def test_outputs(stack_json):
    assert set(stack_json["output"]) >= {
        "cluster_name",
        "cluster_endpoint",
        "update_kubeconfig",
        "interruption_queue",
    }
    assert (
        stack_json["output"]["update_kubeconfig"]["value"]
        == "aws eks update-kubeconfig --region eu-west-1 --name gpu-dev-euw1-eks"
    )


def test_local_state_by_default_and_s3_as_a_setting():
    stack = Instance("e", "eks-karpenter", {"state_bucket": "acme-tf-state"}).build(cdktf.Testing.app())
    backend = json.loads(cdktf.Testing.synth(stack))["terraform"]["backend"]
    assert backend == {
        "s3": {
            "bucket": "acme-tf-state",
            "encrypt": True,
            "key": "e/terraform.tfstate",
            "region": "eu-west-1",
            "use_lockfile": True,
        }
    }


def test_every_version_eks_offers_is_one_the_pinned_karpenter_supports():
    """Karpenter's compatibility matrix bounds the cluster's version: moving the calendar past it
    (a new EKS version) needs a Karpenter pin that supports it, checked at synth."""
    from gpu_constructs.compute.eks import check_karpenter_kubernetes
    from gpu_constructs.compute.eks.karpenter import KARPENTER_KUBERNETES

    assert versions.KARPENTER_CHART.version in KARPENTER_KUBERNETES
    offered = [v for v, s in versions.EKS_SUPPORT.items() if s.extended_until > versions.EKS_SUPPORT_RECORDED]
    for version in offered:
        check_karpenter_kubernetes(versions.KARPENTER_CHART.version, version)
    with pytest.raises(
        ConfigError,
        match=r"^'kubernetes_version' is '1.37': Karpenter 1.14.1 supports Kubernetes 1.26 to 1.36 ",
    ):
        check_karpenter_kubernetes("1.14.1", "1.37")
    check_karpenter_kubernetes("9.9.9", "1.37")  # an unrecorded release is not checked


def test_eks_version_check_follows_the_calendar():
    # 1.31 leaves extended support on 2026-11-26: offered the day before, refused that day.
    check_eks_version("1.31", extended_support=True, on=date(2026, 11, 25))
    with pytest.raises(
        ConfigError, match=r"'kubernetes_version' is '1.31': out of EKS support since 2026-11-26"
    ):
        check_eks_version("1.31", extended_support=True, on=date(2026, 11, 26))
    assert versions.EKS_KUBERNETES.version in versions.EKS_SUPPORT
    check_eks_version(versions.EKS_KUBERNETES.version)


def test_a_version_leaving_standard_support_needs_the_extended_support_setting():
    """1.34's standard support ends 2026-12-02, within the margin of the table's date."""
    with pytest.raises(
        ConfigError,
        match=(
            r"^'kubernetes_version' is '1.34': EKS standard support ends 2026-12-02 \(calendar as of "
            r"2026-11-23\), then the cluster is billed for extended support; use 1.35, or set "
            r"extended_support=True to pay for it$"
        ),
    ):
        eks_props(kubernetes_version="1.34")
    cluster = eks_props(kubernetes_version="1.34", extended_support=True)
    assert cluster.extended_support


def test_the_version_check_does_not_read_the_clock(monkeypatch, synth):
    """Synth gives the same answer on any day: the table's recorded date is the reference."""
    import gpu_constructs.compute.eks as eks

    class Later(date):
        @classmethod
        def today(cls) -> date:
            return date(2031, 1, 1)

    monkeypatch.setattr(eks, "date", Later)
    eks_props()
    synthesized = eks_stack(synth, kubernetes_version="1.34", extended_support=True)
    (cluster,) = resources(synthesized, "aws_eks_cluster").values()
    assert cluster["upgrade_policy"] == {"support_type": "EXTENDED"}


def pool(**overrides) -> NodePoolSpec:
    fields = {
        "name": "p",
        "node_class": "default",
        "families": ("t3",),
        "sizes": ("small",),
        "capacity_types": ("spot",),
        "consolidate_after": "1m",
        "cpu_limit": 1,
        "memory_limit_gi": 1,
    }
    fields.update(overrides)
    return NodePoolSpec(**fields)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: pool(cpu_limit=0), r"'p.cpu_limit' is 0: use at least 1"),
        (
            lambda: pool(termination_grace_period="1 day"),
            r"'p.termination_grace_period' is '1 day': give a duration such as 30m or 24h \(not Never",
        ),
        (lambda: DisruptionBudget("ten"), r"'budget.nodes' is 'ten': give a node count such as 1"),
        (
            lambda: DisruptionBudget(reasons=("Idle",)),
            r"'budget.reasons' is 'Idle': use one of Underutilized",
        ),
        (
            lambda: DisruptionBudget(schedule="@daily"),
            r"'budget.schedule' is '@daily': give a schedule and a duration together",
        ),
        (lambda: pool(gpu_limit=0), r"'p.gpu_limit' is 0: use at least 1"),
        (lambda: pool(families=("t9",)), r"'p.families' is 't9': use known instance families"),
        (
            lambda: pool(consolidate_after="5 minutes"),
            r"'p.consolidate_after' is '5 minutes': give a duration such as 30s, 1m or 5m",
        ),
        (
            lambda: pool(capacity_types=("reserved",)),
            r"'p.capacity_types' is 'reserved': use one of spot, on-demand",
        ),
        (lambda: NodeClassSpec("gpu", 200, iops=100), r"'gpu.iops' is 100: use from 3000 to 16000"),
        (
            lambda: NodeClassSpec("gpu", 20, iops=16000),
            r"'gpu.iops' is 16000: gp3 allows at most 500 IOPS per GiB, 10000 on 20 GiB",
        ),
        (
            lambda: NodeClassSpec("gpu", 200, iops=3000, throughput_mibs=1000),
            r"'gpu.throughput_mibs' is 1000: gp3 allows at most 0.25 MiB/s per IOPS, 750 with 3000 IOPS",
        ),
        (
            lambda: NodeClassSpec("gpu", 200, ami_alias="al2@latest"),
            r"'gpu.ami_alias' is 'al2@latest': use family@release with a family of al2023, bottlerocket",
        ),
        (
            lambda: NodeClassSpec("gpu", 200, ami_alias="al2023"),
            r"'gpu.ami_alias' is 'al2023': use family@release",
        ),
        (
            lambda: NodeClassSpec("gpu", 200, ami_alias="al2023@2025-11-20"),
            r"a pinned release such as al2023@v20260304",
        ),
        (
            lambda: NodeClassSpec("gpu", 200, ami_alias="al2023@latest"),
            r"'gpu.ami_alias' is 'al2023@latest': .*\(latest would roll every node on each AMI release\)$",
        ),
        (
            lambda: Instance("eks-karpenter", "eks-karpenter", {"ami_alias": "bottlerocket@latest"}).build(
                cdktf.Testing.app()
            ),
            r"^eks-karpenter: 'ami_alias' is 'bottlerocket@latest': use family@release",
        ),
        (
            lambda: Instance(
                "eks-karpenter",
                "eks-karpenter",
                {"ami_alias": "bottlerocket@v1.24.1", "time_slicing_replicas": 2},
            ).build(cdktf.Testing.app()),
            r"^eks-karpenter: 'time_slicing_replicas' is 2: node class gpu runs bottlerocket@v1.24.1, "
            r"which has no time-slicing settings: use bottlerocket@v1.25.0 or later, or "
            r"time_slicing_replicas=1$",
        ),
        (
            lambda: eks_props(
                node_classes=(NodeClassSpec("gpu", 200, ami_alias="bottlerocket@v1.50.0"),),
                node_pools=tuple(replace(p, node_class="gpu") for p in SEED_NODE_POOLS),
                sharing=GpuSharing(time_slicing_replicas=2),
            ),
            r"^'time_slicing_replicas' is 2: node class gpu also serves pool general without GPUs, "
            r"whose Bottlerocket variant refuses the device plugin settings: give that pool its own "
            r"node class$",
        ),
        (
            lambda: eks_props(
                node_classes=(
                    NodeClassSpec("default", 50),
                    NodeClassSpec("gpu", 200, ami_alias="bottlerocket@v1.50.0"),
                ),
                sharing=GpuSharing(mig_strategy=MigStrategy.SINGLE),
            ),
            r"^'mig_strategy' is 'single': use MigStrategy.NONE with node class gpu on Bottlerocket",
        ),
        (
            lambda: eks_props(system_instance_type="t3.small", system_node_count=1),
            r"^'system_instance_type' is 't3.small': 1 such nodes cannot hold Karpenter's 2 replicas of 1 CPU "
            r"and 1Gi with the EKS add-ons \(Karpenter \(requests 1000m, 1024Mi\) fits none of 1 x t3.small "
            r".*\); use a larger type such as t3.xlarge or raise system_node_count$",
        ),
        (
            lambda: eks_props(availability_zones=("eu-west-1a",)),
            r"'availability_zones' is \('eu-west-1a',\): give at least two zones",
        ),
        (
            lambda: eks_props(availability_zones=("eu-west-1a", "us-east-1a")),
            r"'availability_zones' is 'us-east-1a': use zones of region eu-west-1",
        ),
        (
            lambda: eks_props(vpc_cidr="10.0.0.0/24"),
            r"'vpc_cidr' is '10.0.0.0/24': use a /20 or larger",
        ),
        (
            lambda: eks_props(kubernetes_version="1.34.2"),
            r"'kubernetes_version' is '1.34.2'",
        ),
        (
            lambda: eks_props(kubernetes_version="1.28"),
            r"'kubernetes_version' is '1.28': out of EKS support since 2025-11-26 \(Amazon EKS Kubernetes "
            r"release calendar, .*\); use one of .*1\.34, 1\.35",
        ),
        (
            lambda: eks_props(kubernetes_version="1.99"),
            r"'kubernetes_version' is '1.99': not in EKS's release calendar",
        ),
        (
            lambda: eks_props(system_instance_type="g5.xlarge"),
            r"'system_instance_type' is 'g5.xlarge': use a non-GPU type such as t3.small",
        ),
        (
            lambda: eks_props(system_instance_type="t3-small"),
            r"'system_instance_type' is 't3-small'",
        ),
        (
            lambda: RdsPostgresProps(compute=None, name="d", instance_class="t4g.medium"),
            r"'instance_class' is 't4g.medium': give an RDS instance class with its db. prefix",
        ),
        (
            lambda: RdsPostgresProps(compute=None, name="d", instance_class="db.t4g.micro"),
            r"'instance_class' is 'db.t4g.micro': Performance Insights \(always on here\) needs",
        ),
        (
            lambda: eks_props(node_pools=(pool(),)),
            r"'node_pools' is 'gpu-inference': keep a 'gpu-inference' pool",
        ),
    ],
)
def test_bad_input_fails_with_field_value_and_fix(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


@NEEDS_AWS_5
def test_offline_init_validate_and_plan_with_the_real_aws_provider(stack_json, tmp_path, aws_terraform):
    terraform, env = aws_terraform
    (tmp_path / "main.tf.json").write_text(json.dumps(aws_part(stack_json)))

    def run(*args: str) -> str:
        output: str = run_terraform(terraform, tmp_path, env, *args).stdout
        return output

    run("init", "-input=false")
    assert (
        tmp_path / ".terraform" / "providers" / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0"
    ).is_dir()
    run("validate")
    plan = run("plan", "-input=false", "-lock=false", *[f"-var={k}={v}" for k, v in PLAN_VARS.items()])
    resources_planned = sum(len(v) for v in aws_part(stack_json)["resource"].values())
    assert f"Plan: {resources_planned} to add, 0 to change, 0 to destroy." in plan


@NEEDS_AWS_5
def test_the_releases_replace_triggered_by_is_valid_against_the_real_aws_schema(
    stack_json, tmp_path, aws_terraform
):
    """Real Terraform with the real AWS provider: each release's lifecycle, on a terraform_data
    stand-in (the helm provider is not on this machine), validates, and the interpolation cdktf makes
    of a resource object does not. validate checks only that each entry is a reference; that it names
    a resource the replacement gate checks (tests/lifecycle/test_replacement.py)."""
    terraform, env = aws_terraform
    config = aws_part(stack_json)
    lifecycles = {
        body["lifecycle"]["replace_triggered_by"][0]
        for body in stack_json["resource"]["helm_release"].values()
    }
    assert lifecycles == {f"aws_eks_cluster.{next(iter(config['resource']['aws_eks_cluster']))}.id"}
    (trigger,) = lifecycles

    own_steps = dict(config["resource"].get("terraform_data", {}))

    def validate(reference: str) -> subprocess.CompletedProcess[str]:
        config["resource"]["terraform_data"] = {
            **own_steps,
            "release": {"lifecycle": {"replace_triggered_by": [reference]}},
        }
        (tmp_path / "main.tf.json").write_text(json.dumps(config))
        return subprocess.run(
            [terraform, "validate", "-no-color"], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    run_terraform(terraform, tmp_path, env, "init", "-input=false")
    assert validate(trigger).returncode == 0, validate(trigger).stderr
    interpolated = validate("${" + trigger + "}")
    assert interpolated.returncode != 0


def test_vpc_cluster_and_karpenter_compose_on_their_own(synth):
    """The three constructs EksGpuCompute composes, each in its own scope (their resources nested)."""
    from cdktf_cdktf_provider_aws.provider import AwsProvider

    from gpu_constructs.cluster import GpuCluster, KubeAccess, Manager, Taint
    from gpu_constructs.compute.eks.cluster import EksSystemCluster, EksSystemClusterProps
    from gpu_constructs.compute.eks.karpenter import Karpenter, KarpenterProps
    from gpu_constructs.compute.eks.vpc import AwsVpc, AwsVpcProps

    def build(stack):
        AwsProvider(stack, "aws", region="eu-west-1")
        vpc = AwsVpc(stack, "net", props=AwsVpcProps("c", ("eu-west-1a", "eu-west-1b"), kms_key_arn="arn:k"))
        cluster = EksSystemCluster(
            stack,
            "eks",
            props=EksSystemClusterProps(
                "c", "1.34", subnet_ids=[s.id for s in vpc.private_subnets], kms_key_arn="arn:k"
            ),
        )
        Karpenter(
            stack,
            "karpenter",
            props=KarpenterProps(
                cluster_name="c",
                cluster=cluster.eks,
                region="eu-west-1",
                account_id="1",
                gpu_cluster=GpuCluster(
                    name="c",
                    access=KubeAccess(host=cluster.eks.endpoint),
                    gpu_node_selector={},
                    gpu_taint=None,
                    gpu_toleration_taint=Taint("gpu", "true"),
                    runtime_class=None,
                    driver=Manager.IMAGE,
                    toolkit=Manager.IMAGE,
                    ready=[cluster.system_nodes],
                    identity=[cluster.eks],
                ),
            ),
        )

    synthesized = synth(build)
    subnets = resources(synthesized, "aws_subnet")
    assert len(subnets) == 4 and all(name.startswith("net_") for name in subnets)
    assert one(synthesized, "aws_eks_cluster")["vpc_config"]["subnet_ids"][0].startswith(
        "${aws_subnet.net_private"
    )
    assert {r["name"] for r in resources(synthesized, "helm_release").values()} == {
        "karpenter-crd",
        "karpenter",
        "karpenter-node-pools",
    }


def _monitoring_claims(values: dict) -> dict[str, dict]:
    prometheus = values["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    alertmanager = values["alertmanager"]["alertmanagerSpec"]["storage"]["volumeClaimTemplate"]["spec"]
    grafana = values["grafana"]["persistence"]
    return {"prometheus": prometheus, "alertmanager": alertmanager, "grafana": grafana}


def test_monitoring_volumes_come_from_an_encrypted_gp3_class_of_the_ebs_csi_driver(stack_json):
    (addon_name,) = [
        n
        for n, a in resources(stack_json, "aws_eks_addon").items()
        if a["addon_name"] == "aws-ebs-csi-driver"
    ]
    addon = resources(stack_json, "aws_eks_addon")[addon_name]
    (association,) = addon["pod_identity_association"]
    assert association["service_account"] == "ebs-csi-controller-sa"
    role = role_of(association["role_arn"])
    policies = {
        resources(stack_json, "aws_iam_role_policy_attachment")[g.split(".", 1)[1]]["policy_arn"]
        for g in grants_of(stack_json, role)
    }
    assert policies == {"arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"}
    # The driver keeps its permissions until it is gone, and runs beside the other controllers.
    assert grants_of(stack_json, role) <= set(addon["depends_on"])
    (agent,) = [
        f"aws_eks_addon.{n}"
        for n, a in resources(stack_json, "aws_eks_addon").items()
        if a["addon_name"] == "eks-pod-identity-agent"
    ]
    assert agent in addon["depends_on"]
    configuration = json.loads(addon["configuration_values"])
    assert configuration["controller"]["nodeSelector"] == {"role": "system"}
    assert configuration["node"] == {"tolerateAllTaints": True}

    by_name = releases(stack_json)
    (storage_class,) = by_kind(manifests_of(by_name["storage-class-gp3"]), "StorageClass")
    assert storage_class["provisioner"] == "ebs.csi.aws.com"
    assert storage_class["parameters"]["type"] == "gp3"
    assert storage_class["parameters"]["encrypted"] == "true"
    assert "kmsKeyId" not in storage_class["parameters"]  # the account's aws/ebs key, not the cluster's
    assert storage_class["parameters"]["tagSpecification_1"] == "gpu-constructs.io/cluster=gpu-dev-euw1-eks"
    assert (storage_class["reclaimPolicy"], storage_class["volumeBindingMode"]) == (
        "Retain",
        "WaitForFirstConsumer",
    )
    claims = _monitoring_claims(release_values(by_name["kube-prometheus-stack"]))
    assert {name: claim["storageClassName"] for name, claim in claims.items()} == dict.fromkeys(claims, "gp3")


def test_monitoring_is_destroyed_before_the_ebs_csi_driver_that_detaches_its_volumes(stack_json):
    from tests.support.order import dependency_closure

    (addon,) = [
        f"aws_eks_addon.{n}"
        for n, a in resources(stack_json, "aws_eks_addon").items()
        if a["addon_name"] == "aws-ebs-csi-driver"
    ]
    for name, body in resources(stack_json, "helm_release").items():
        if body["name"] in ("kube-prometheus-stack", "gpu-monitoring", "storage-class-gp3"):
            assert addon in dependency_closure(stack_json, f"helm_release.{name}"), body["name"]


TEARDOWN_DOC = render.ROOT / "docs" / "eks-karpenter.md"


def test_the_teardown_deletes_every_ingress_the_stack_renders(helm, upstream):
    """Each namespace an Ingress is rendered in, with grafana_host set (Grafana's Ingress too), has
    its `kubectl delete ingress --all -n <namespace>` in the Teardown section, which also points
    at the monitoring volumes a destroy leaves."""
    from tests.conftest import site_instance

    settings = {"grafana_host": "grafana.example.com"}
    stack = render.rendered(site_instance("eks-karpenter-grafana", "eks-karpenter", settings))
    ingresses = [
        (release.name, obj["metadata"].get("namespace") or release.namespace)
        for release, obj in stack.objects()
        if obj.get("kind") == "Ingress"
    ]
    # The inference endpoint's and Grafana's, from two releases.
    assert len({name for name, _ in ingresses}) == 2, ingresses
    text = TEARDOWN_DOC.read_text()
    teardown = text[text.index("## Teardown") :]
    teardown = teardown[: teardown.index("\n## ", 1)]
    deleted = set(re.findall(r"^kubectl delete ingress --all -n (\S+)", teardown, re.MULTILINE))
    assert {namespace for _, namespace in ingresses} <= deleted
    assert "(monitoring.md#volumes-left-after-a-destroy-eks-karpenter)" in teardown
    assert (
        "## Volumes left after a destroy (eks-karpenter)"
        in (TEARDOWN_DOC.parent / "monitoring.md").read_text()
    )
