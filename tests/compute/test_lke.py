"""lke: the hand-written linode bindings against the provider's reference pages, the pools, the
firewall, bad input, and the variables under real Terraform."""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import partial
from pathlib import Path

import cdktf
import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from environments import Instance
from gpu_constructs import helm as helm_lib
from gpu_constructs.compute.lke import LkeProps
from gpu_constructs.errors import ConfigError
from tests.conftest import (
    ON_ENGINE,
    plan_variables,
    release_values,
    resources,
    run_terraform,
    terraform_binary,
    variables_workdir,
)
from tests.support.validators import argument_keys


def synth(**overrides) -> dict:
    return json.loads(cdktf.Testing.synth(Instance("lke", "lke", overrides).build(cdktf.Testing.app())))


@pytest.fixture(scope="module")
def stack_json() -> dict:
    return synth()


ENTERPRISE = {"tier": "enterprise", "k8s_version": "v1.34.1+lke1"}


@pytest.fixture(scope="module")
def enterprise_json() -> dict:
    return synth(**ENTERPRISE)


def documented(upstream: Path, page: str) -> set[str]:
    """Every argument and block name the reference page lists (``* `name` - ...`` bullets)."""
    text = (upstream / "provider-docs" / "linode" / page).read_text()
    arguments = text.split("## Argument Reference", 1)[1].split("## Attributes Reference", 1)[0]
    return set(re.findall(r"^\s*\* \[?`([a-z0-9_]+)`", arguments, re.M))


def one(stack_json, kind):
    (found,) = resources(stack_json, kind).values()
    return found


@pytest.mark.parametrize(
    ("kind", "page", "required"),
    [
        ("linode_lke_cluster", "lke_cluster.md", {"label", "k8s_version", "region", "pool"}),
        ("linode_lke_node_pool", "lke_node_pool.md", {"cluster_id", "type"}),
        ("linode_firewall", "firewall.md", {"label", "inbound_policy", "outbound_policy"}),
    ],
)
def test_bindings_emit_only_documented_arguments(enterprise_json, upstream, kind, page, required):
    body = one(enterprise_json, kind)
    assert argument_keys(body, frozenset({"labels"})) <= documented(upstream, page)
    assert required <= set(body)


def test_provider_block_and_source(stack_json, upstream):
    assert stack_json["terraform"]["required_providers"]["linode"] == {
        "source": "linode/linode",
        "version": "3.13.0",
    }
    assert stack_json["provider"]["linode"] == [{"token": "${var.linode_token}"}]
    provider_doc = (upstream / "provider-docs" / "linode" / "index.md").read_text()
    assert "* `token` -" in provider_doc


@ON_ENGINE["cdktf"]
def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


@ON_ENGINE["cdktn"]
def test_snapshot_cdktn(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


def test_cluster_is_ha_in_chicago_on_1_34_with_an_acl(stack_json):
    cluster = one(stack_json, "linode_lke_cluster")
    assert (cluster["region"], cluster["k8s_version"]) == ("us-ord", "1.34")
    assert cluster["label"] == "${var.cluster_name_prefix}-lke-gpu-kubeflow"
    plane = cluster["control_plane"][0]
    assert plane["high_availability"] is True
    acl = "${distinct(concat(var.api_allowed_cidrs, var.runner_cidrs))}"
    assert plane["acl"][0] == {"enabled": True, "addresses": [{"ipv4": acl}]}
    assert cluster["external_pool_tags"] == ["gpu-pool", "system-standby"]


def test_gpu_pool_autoscales_one_to_five_without_fighting_the_autoscaler(stack_json):
    pool = one(stack_json, "linode_lke_node_pool")
    assert pool["type"] == "g2-gpu-rtx4000a1-s"
    assert pool["autoscaler"] == [{"min": 1, "max": 5}]
    assert "node_count" not in pool and pool["lifecycle"]["ignore_changes"] == ["node_count"]
    assert pool["taint"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert pool["labels"] == {"nvidia.com/gpu": "true"}
    assert pool["tags"] == ["gpu-pool"]


def enterprise_only(upstream: Path, page: str) -> set[str]:
    """The arguments the reference page marks as LKE Enterprise only (``For LKE enterprise only``)."""
    text = (upstream / "provider-docs" / "linode" / page).read_text()
    arguments = text.split("## Argument Reference", 1)[1].split("## Attributes Reference", 1)[0]
    return {
        match.group(1)
        for match in re.finditer(r"^\s*\* \[?`([a-z0-9_]+)`.*$", arguments, re.M)
        if "enterprise" in match.group(0).lower()
    }


def test_the_gpu_placement_reaches_the_nodes_on_every_tier(stack_json, enterprise_json, upstream):
    """The GPU pool's label and taint are what the contract places GPU pods by, so they must work on
    the standard tier too: the reference pages mark only k8s_version and update_strategy as LKE
    Enterprise only (the provider sends labels and taints whatever the tier, and its acceptance tests
    change them in place on a standard cluster), and a standard-tier stack emits none of those."""
    for page in ("lke_node_pool.md", "lke_cluster.md"):
        assert enterprise_only(upstream, page) == {"k8s_version", "update_strategy"}, page
    for synthesized in (stack_json, enterprise_json):
        pool = one(synthesized, "linode_lke_node_pool")
        assert pool["labels"] == {"nvidia.com/gpu": "true"}
        assert pool["taint"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    standard_pools = [
        one(stack_json, "linode_lke_node_pool"),
        one(stack_json, "linode_lke_cluster")["pool"][0],
    ]
    for pool, page in zip(standard_pools, ("lke_node_pool.md", "lke_cluster.md"), strict=True):
        assert not argument_keys(pool, frozenset({"labels"})) & enterprise_only(upstream, page)


# Linode's default inbound rules for LKE nodes (linode/cloud-firewall-controller,
# internal/rules/defaults.go): (label, protocol, ports, ipv4), in order.
LINODE_LKE_DEFAULTS = [
    ("allow-all-icmp", "ICMP", None, ["0.0.0.0/0"]),
    ("allow-kubelet-health-checks", "TCP", "10250,10256", ["192.168.128.0/17"]),
    ("allow-lke-wireguard", "UDP", "51820", ["192.168.128.0/17"]),
    ("allow-cluster-dns-tcp", "TCP", "53", ["192.168.128.0/17"]),
    ("allow-cluster-dns-udp", "UDP", "53", ["192.168.128.0/17"]),
    ("allow-calico-bgp", "TCP", "179", ["192.168.128.0/17"]),
    ("allow-calico-typha", "TCP", "5473", ["192.168.128.0/17"]),
    ("allow-cluster-nodeports-tcp", "TCP", "30000-32767", ["192.168.255.0/24"]),
    ("allow-cluster-nodeports-udp", "UDP", "30000-32767", ["192.168.255.0/24"]),
    ("allow-cluster-ipencap", "IPENCAP", None, ["192.168.128.0/17"]),
]


def test_node_firewall_mirrors_linode_lke_defaults(enterprise_json):
    for stack_json in [enterprise_json]:
        firewall = one(stack_json, "linode_firewall")
        assert (firewall["inbound_policy"], firewall["outbound_policy"]) == ("DROP", "ACCEPT")
        inbound = firewall["inbound"]
        assert [
            (r["label"], r["protocol"], r.get("ports"), r["ipv4"]) for r in inbound[:10]
        ] == LINODE_LKE_DEFAULTS
        assert inbound[0]["ipv6"] == ["::/0"] and all(r["action"] == "ACCEPT" for r in inbound)
        node, ui = inbound[10:]
        # node-exporter (hostNetwork) scraped at every node's address (tests/lifecycle/test_firewall.py)
        assert (node["protocol"], node["ports"], node["ipv4"]) == ("TCP", "9100", ["192.168.128.0/17"])
        assert (ui["ports"], ui["ipv4"]) == ("80,443", "${var.ui_allowed_cidrs}")
        # The API is on the managed control plane (its ACL), not on the nodes.
        assert not [r for r in inbound if r["ipv4"] == "${var.api_allowed_cidrs}"]
        assert all(3 <= len(r["label"]) <= 32 for r in inbound)
        for pool in resources(stack_json, "linode_lke_node_pool").values():
            assert pool["firewall_id"].startswith("${linode_firewall.")
        cluster = one(stack_json, "linode_lke_cluster")
        assert cluster["pool"][0]["firewall_id"].startswith("${linode_firewall.")


def test_firewall_rules_the_provider_would_refuse_fail_at_synth():
    from gpu_constructs.compute.lke.bindings import FirewallRule

    with pytest.raises(ConfigError, match=r"'firewall rule label' is 'ui': use 3 to 32 characters"):
        FirewallRule("ui", "ACCEPT", "TCP", "80")
    with pytest.raises(
        ConfigError, match=r"'allow-gre.protocol' is 'GRE': use one of TCP, UDP, ICMP, IPENCAP"
    ):
        FirewallRule("allow-gre", "ACCEPT", "GRE")
    with pytest.raises(ConfigError, match=r"'allow-icmp.ports' is '1': ICMP has no ports"):
        FirewallRule("allow-icmp", "ACCEPT", "ICMP", "1")


def _operator_values(stack_json: dict) -> dict:
    (operator,) = [r for r in resources(stack_json, "helm_release").values() if r["chart"] == "gpu-operator"]
    return release_values(operator)


def test_gpu_operator_uses_the_nodes_preinstalled_driver_and_toolkit(stack_json):
    """LKE GPU nodes bring the driver and toolkit (Akamai's LKE GPU guide installs only the device
    plugin): the operator must not install a second driver over the node's."""
    values = _operator_values(stack_json)
    assert values["driver"]["enabled"] is False and values["toolkit"]["enabled"] is False
    assert values["daemonsets"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_the_operator_installs_driver_and_toolkit_when_the_image_has_none():
    values = _operator_values(synth(driver_preinstalled=False))
    assert values["driver"]["enabled"] is True and values["toolkit"]["enabled"] is True


def test_kubeconfig_is_a_sensitive_output(stack_json):
    assert stack_json["output"]["kubeconfig"]["sensitive"] is True
    assert stack_json["variable"]["linode_token"]["sensitive"] is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"gpu_min_nodes": 3, "gpu_max_nodes": 2},
            r"'gpu_max_nodes' is 2: use from 3 to 100; max cannot be below gpu_min_nodes",
        ),
        (
            {"gpu_plan": "g1-gpu-rtx6000-1"},
            r"'gpu_plan' is 'g1-gpu-rtx6000-1': LKE does not offer Quadro RTX 6000",
        ),
        ({"gpu_plan": "g6-standard-2"}, r"'gpu_plan' is 'g6-standard-2': use a Linode GPU plan"),
        ({"k8s_version": "1.34.1"}, r"'k8s_version' is '1.34.1'"),
        ({"k8s_version": "1.29"}, r"'k8s_version' is '1.29': LKE offers 1.33, 1.34, 1.35"),
        (
            {"region": "us-east"},
            r"'region' is 'us-east': g2-gpu-rtx4000a1-s is offered in de-fra-2, .*us-ord, us-sea; pick one",
        ),
        ({"region": "Chicago"}, r"'region' is 'Chicago': give a Linode region id such as us-ord"),
        (
            {"gpu_plan": "g3-gpu-h100-1"},
            r"'gpu_plan' is 'g3-gpu-h100-1': not a GPU plan family this project knows",
        ),
        ({"gpu_min_nodes": 0}, r"'gpu_min_nodes' is 0: use from 1 to 100"),
        ({"system_nodes": 0}, r"'system_nodes' is 0: use from 1 to 100"),
        (
            {"system_plan": "g2-gpu-rtx4000a1-s"},
            r"'system_plan' is 'g2-gpu-rtx4000a1-s': use a Linode CPU plan",
        ),
        (
            {"system_standby_plan": "g2-gpu-rtx4000a1-s"},
            r"'system_standby_plan' is 'g2-gpu-rtx4000a1-s': use a Linode CPU plan",
        ),
    ],
)
def test_bad_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        synth(**overrides)


def test_an_empty_allowlist_with_the_firewall_on_fails():
    with pytest.raises(
        ConfigError, match=r"'ui_allowlist' is \[\]: give at least one network, or set firewall=False"
    ):
        LkeProps(
            label="x",
            api_allowlist=["203.0.113.0/24"],
            ui_allowlist=[],
            runner_allowlist=RUNNER,
            firewall_label="ops-nodes",
            firewall_controller_token=TOKEN,
        )
    LkeProps(
        label="x",
        api_allowlist=["203.0.113.0/24"],
        ui_allowlist=[],
        runner_allowlist=RUNNER,
        firewall_label="ops-nodes",
        firewall=False,
    )


RUNNER = ["198.51.100.7/32"]
TOKEN = "${var.firewall_controller_token}"


@pytest.mark.parametrize("firewall", [True, False])
def test_an_empty_runner_allowlist_fails_whatever_the_firewall(firewall):
    with pytest.raises(
        ConfigError, match=r"'runner_allowlist' is \[\]: give the network Terraform runs from"
    ):
        LkeProps(
            label="x",
            api_allowlist=[],
            ui_allowlist=[],
            runner_allowlist=[],
            firewall_label="ops-nodes",
            firewall=firewall,
            firewall_controller_token=TOKEN,
        )
    props = LkeProps(
        label="x",
        api_allowlist=[],
        ui_allowlist=[],
        runner_allowlist=RUNNER,
        firewall_label="ops-nodes",
        firewall=False,
    )
    assert props.runner_allowlist == RUNNER


@pytest.fixture(scope="module")
def variables_dir(stack_json, tmp_path_factory) -> Path:
    return variables_workdir(stack_json["variable"], tmp_path_factory.mktemp("lke-variables"))


def plan(directory: Path, **variables: str | None) -> subprocess.CompletedProcess[str]:
    base = {
        "linode_token": "0123456789abcdef" * 4,
        "cluster_name_prefix": "ops",
        "api_allowed_cidrs": '["203.0.113.0/24"]',
        "ui_allowed_cidrs": '["0.0.0.0/0"]',
        "runner_cidrs": '["198.51.100.7/32"]',
        "firewall_controller_token": "0123456789abcdef" * 4,
    }
    return plan_variables(directory, {**base, **variables})


def test_good_variables_plan(variables_dir):
    assert plan(variables_dir).returncode == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ui_allowed_cidrs", "[]", "ui_allowed_cidrs needs at least one network while the firewall is on."),
        ("api_allowed_cidrs", '["203.0.113.300/24"]', "api_allowed_cidrs entries must be IPv4 CIDRs"),
        ("cluster_name_prefix", "Ops_Team", "cluster_name_prefix must be 1-15 lower-case letters"),
        ("cluster_name_prefix", "ops-", "starting and ending with a letter or digit, without '--'."),
        ("cluster_name_prefix", "ops--a", "starting and ending with a letter or digit, without '--'."),
        ("cluster_name_prefix", "a" * 16, "cluster_name_prefix must be 1-15 lower-case letters"),
        ("runner_cidrs", "[]", "runner_cidrs needs the network Terraform runs from"),
        ("runner_cidrs", '["198.51.100.7"]', "runner_cidrs entries must be IPv4 CIDRs"),
        ("runner_cidrs", None, "No value for required variable"),
    ],
)
def test_bad_variables_fail_in_terraform(variables_dir, name, value, message):
    result = plan(variables_dir, **{name: value})
    assert result.returncode != 0 and message in " ".join(result.stderr.split())


@pytest.mark.parametrize("firewall", [True, False])
def test_the_api_acl_is_the_allowlist_and_the_runner_in_real_terraform(firewall, tmp_path):
    """The synthesized ACL expression evaluated by terraform plan; an empty runner list fails even
    with the firewall off, where an empty api_allowed_cidrs is accepted."""
    synthesized = synth(firewall=firewall)
    acl = one(synthesized, "linode_lke_cluster")["control_plane"][0]["acl"][0]
    assert acl["enabled"] is True
    directory = variables_workdir(synthesized["variable"], tmp_path)
    config = json.loads((directory / "main.tf.json").read_text())
    config["output"] = {"acl": {"value": acl["addresses"][0]["ipv4"]}}
    (directory / "main.tf.json").write_text(json.dumps(config))
    token = {} if firewall else {"firewall_controller_token": None}
    result = plan(
        directory,
        **token,
        api_allowed_cidrs='["203.0.113.0/24", "198.51.100.7/32"]',
        runner_cidrs='["198.51.100.7/32", "192.0.2.10/32"]',
    )
    assert result.returncode == 0, result.stderr
    shown = " ".join(result.stdout.split())
    assert '+ acl = [ + "203.0.113.0/24", + "198.51.100.7/32", + "192.0.2.10/32", ]' in shown
    if not firewall:
        assert plan(directory, api_allowed_cidrs="[]", **token).returncode == 0
    failed = plan(directory, runner_cidrs="[]", **token)
    assert failed.returncode != 0 and "runner_cidrs needs the network" in " ".join(failed.stderr.split())


def test_the_firewall_label_carries_the_cluster_prefix(enterprise_json, tmp_path):
    """Firewall labels are unique in a Linode account: a second instance gets its own, and the
    longest prefix Terraform accepts still fits the provider's 32 characters, in the firewall label
    and in the cluster label."""
    label = one(enterprise_json, "linode_firewall")["label"]
    assert label == "${var.cluster_name_prefix}-lke-gpu-nodes"
    cluster_label = one(enterprise_json, "linode_lke_cluster")["label"]
    longest = "a" * 15
    assert (
        plan(
            variables_workdir(enterprise_json["variable"], tmp_path),
            cluster_name_prefix=longest,
            firewall_controller_token=None,
        ).returncode
        == 0
    )
    for each in (label, cluster_label):
        LkeProps(
            label=cluster_label.replace("${var.cluster_name_prefix}", longest),
            api_allowlist=["203.0.113.0/24"],
            ui_allowlist=["0.0.0.0/0"],
            runner_allowlist=RUNNER,
            firewall_label=label.replace("${var.cluster_name_prefix}", longest),
            firewall_controller_token=TOKEN,
        )
        assert 3 <= len(each.replace("${var.cluster_name_prefix}", longest)) <= 32
    with pytest.raises(ConfigError, match=r"'firewall_label' is 'x': use 3 to 32 characters"):
        LkeProps(
            label="x",
            api_allowlist=[],
            ui_allowlist=[],
            runner_allowlist=RUNNER,
            firewall_label="x",
            firewall_controller_token=TOKEN,
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"firewall_label": "ops--nodes"},
            r"^'firewall_label' is 'ops--nodes': use letters, digits, '-', '_' or '\.', starting and ending "
            r"with a letter or digit, without '--', '__' or '\.\.'$",
        ),
        ({"firewall_label": "ops-nodes-"}, r"^'firewall_label' is 'ops-nodes-': use letters, digits"),
        ({"firewall_label": "ops nodes"}, r"^'firewall_label' is 'ops nodes': use letters, digits"),
        (
            {"label": "a" * 33},
            r"^'label' is 'a{33}': use 1 to 32 characters, none outside the Basic Multilingual Plane$",
        ),
        ({"label": "ops-\U0001f680"}, r"^'label' is .*: use 1 to 32 characters"),
    ],
)
def test_linode_labels_the_api_refuses_fail_at_synth(fields, message):
    base = {
        "label": "ops-lke-gpu-kubeflow",
        "api_allowlist": ["203.0.113.0/24"],
        "ui_allowlist": ["0.0.0.0/0"],
        "runner_allowlist": RUNNER,
        "firewall_label": "ops-lke-gpu-nodes",
        "firewall_controller_token": TOKEN,
    }
    LkeProps(**base)
    with pytest.raises(ConfigError, match=message):
        LkeProps(**{**base, **fields})


@pytest.mark.parametrize("plan", ["g3-gpu-rtxpro6000-blackwell-1", "g3-gpu-rtxpro6000-blackwell-4"])
def test_blackwell_plans_are_accepted_where_offered(plan):
    pool = one(synth(gpu_plan=plan, region="us-sea"), "linode_lke_node_pool")
    assert pool["type"] == plan
    with pytest.raises(ConfigError, match=rf"'region' is 'us-ord': {plan} is offered in ca-central, id-cgk"):
        synth(gpu_plan=plan, region="us-ord")


def test_the_lke_page_writes_the_kubeconfig_with_mode_0600(tmp_path):
    """docs/lke.md's command, run with a stub terraform: the token-bearing file is owner-only."""
    import os
    import stat

    page = (Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text()
    (command,) = [
        line for line in page.splitlines() if "output -raw kubeconfig > ../../../kubeconfig/lke" in line
    ]
    (tmp_path / "cdktf.out" / "stacks" / "lke").mkdir(parents=True)
    (tmp_path / "kubeconfig").mkdir()
    (tmp_path / "kubeconfig" / "lke.yaml").write_text("old")
    (tmp_path / "kubeconfig" / "lke.yaml").chmod(0o644)  # written before, world-readable
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "terraform").write_text("#!/bin/sh\necho 'apiVersion: v1'\n")
    (stub / "terraform").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", f"umask 022; {command}"], cwd=tmp_path, env=env, check=True)
    written = tmp_path / "kubeconfig" / "lke.yaml"
    assert written.read_text() == "apiVersion: v1\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def _by_chart(stack_json: dict) -> dict[str, dict]:
    return {r["name"]: r for r in resources(stack_json, "helm_release").values()}


def test_the_standard_tier_keeps_the_nodes_in_the_firewall_with_the_controller(stack_json):
    """A pool's firewall_id is not applied on a standard-tier cluster
    (linode/terraform-provider-linode#2294): the stack emits none, and no firewall of its own;
    cloud-firewall-controller creates the firewall and adds every node."""
    assert "linode_firewall" not in stack_json["resource"]
    cluster = one(stack_json, "linode_lke_cluster")
    assert "tier" not in cluster and "firewall_id" not in cluster["pool"][0]
    assert "firewall_id" not in one(stack_json, "linode_lke_node_pool")
    assert stack_json["provider"]["linode"] == [{"token": "${var.linode_token}"}]
    releases = _by_chart(stack_json)
    crd, token, controller = (
        releases["cloud-firewall-crd"],
        releases["cloud-firewall-token"],
        releases["cloud-firewall"],
    )
    assert (crd["chart"], crd["version"]) == ("cloud-firewall-crd", "0.2.0")
    assert (controller["chart"], controller["version"]) == ("cloud-firewall-controller", "0.2.1")
    assert {r["namespace"] for r in (crd, token, controller)} == {"kube-system"}
    ids = {r["name"]: f"helm_release.{key}" for key, r in resources(stack_json, "helm_release").items()}
    assert {ids["cloud-firewall-crd"], ids["cloud-firewall-token"]} <= set(controller["depends_on"])
    # The controller's rules: Linode's defaults (defaultRules) and HTTP/HTTPS from ui_allowed_cidrs.
    values = release_values(controller)
    assert values == {"apiToken": True}
    # The CloudFirewall in its own release after the controller, adopting the default `primary` the
    # controller creates when there is none (destroy: CR, then controller; tests/lifecycle/test_destroy.py)
    ruleset = releases["cloud-firewall-ruleset"]
    assert ids["cloud-firewall"] in ruleset["depends_on"] and ruleset["take_ownership"] is True
    (firewall,) = release_values(ruleset)["manifests"]
    assert (firewall["kind"], firewall["metadata"]) == (
        "CloudFirewall",
        {"name": "primary", "namespace": "kube-system"},
    )
    node, ui = firewall["spec"]["ruleset"]["inbound"]
    assert (node["label"], node["ports"], node["addresses"]) == (
        "allow-node-host-ports",
        "9100",
        {"ipv4": ["192.168.128.0/17"]},
    )
    assert (ui["label"], ui["protocol"], ui["ports"]) == ("allow-ui-http-https", "TCP", "80,443")
    assert ruleset["set_list"] == [
        {"name": "manifests[0].spec.ruleset.inbound[1].addresses.ipv4", "value": "${var.ui_allowed_cidrs}"}
    ]
    assert "set_list" not in controller
    # Everything the GPU Operator installs waits for the node firewall.
    assert ids["cloud-firewall-ruleset"] in releases["gpu-operator"]["depends_on"]


def test_the_controller_token_is_a_sensitive_variable_written_as_a_secret(stack_json):
    assert stack_json["variable"]["firewall_controller_token"]["sensitive"] is True
    releases = _by_chart(stack_json)
    token = releases["cloud-firewall-token"]
    assert token["set_sensitive"] == [
        {"name": "secrets.linode-cfw.stringData.token", "value": "${var.firewall_controller_token}"}
    ]
    # The path is map keys the values document has (helm provider v3.1.1 cloakSetValue walks them),
    # so the release's metadata.values gets "(sensitive value)" in place of the token.
    assert release_values(token) == {
        "manifests": [],
        "secrets": {"linode-cfw": {"namespace": "kube-system", "type": "Opaque", "stringData": {}}},
    }
    every_values = json.dumps([r.get("values") for r in releases.values()])
    assert "firewall_controller_token" not in every_values
    assert "linode_token" not in json.dumps(releases)


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("linode.cfw", {"token": "${var.t}"}, "secret name"),
        ("linode-cfw", {"tls.crt": "${var.t}"}, "secret key"),
    ],
)
def test_a_sensitive_secret_the_helm_provider_cannot_cloak_fails(name, data, field):
    with pytest.raises(ConfigError) as error:
        helm_lib.SensitiveSecret(name, data)
    assert error.value.field == field and "cannot cloak" in str(error.value)


def test_the_controller_renders_with_the_stacks_rules_and_reads_the_token_secret(helm, upstream):
    from tests.support import render
    from tests.support.stacks import INSTANCES

    stack = render.rendered(INSTANCES["lke"])
    by_name = {r.name: r for r in stack.releases}
    objects = {(o["kind"], o["metadata"]["name"]): o for o in by_name["cloud-firewall"].objects}
    args = objects[("Deployment", "cloud-firewall-controller")]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--linode-creds=linode-cfw" in args and "--linode-creds-ns=kube-system" in args
    assert ("CloudFirewall", "primary") not in objects
    (firewall,) = by_name["cloud-firewall-ruleset"].objects
    assert (firewall["kind"], firewall["metadata"]["name"]) == ("CloudFirewall", "primary")
    assert firewall["metadata"]["namespace"] == "kube-system"
    _, ui = firewall["spec"]["ruleset"]["inbound"]
    assert ui["addresses"] == {"ipv4": ["192.0.2.0/24"]} and ui["label"] == "allow-ui-http-https"
    (secret,) = by_name["cloud-firewall-token"].objects
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == ("kube-system", "linode-cfw")
    assert set(secret["stringData"]) == {"token"} and secret["type"] == "Opaque"
    crds = [o for o in by_name["cloud-firewall-crd"].objects if o["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == ["cloudfirewalls.networking.linode.com"]


def test_the_enterprise_tier_attaches_the_firewall_through_the_pools(enterprise_json):
    firewall = next(iter(resources(enterprise_json, "linode_firewall")))
    reference = f"${{linode_firewall.{firewall}.id}}"
    cluster = one(enterprise_json, "linode_lke_cluster")
    assert cluster["tier"] == "enterprise" and cluster["k8s_version"] == "v1.34.1+lke1"
    assert cluster["pool"][0]["firewall_id"] == reference
    assert one(enterprise_json, "linode_lke_node_pool")["firewall_id"] == reference
    # tier is only accepted over v4beta (the provider's lke_cluster page)
    assert enterprise_json["provider"]["linode"] == [
        {"token": "${var.linode_token}", "api_version": "v4beta"}
    ]
    assert not [
        r for r in resources(enterprise_json, "helm_release").values() if "cloud-firewall" in r["name"]
    ]
    assert "firewall_controller_token" not in enterprise_json["variable"]


def test_without_a_firewall_neither_is_emitted():
    stack_json = synth(firewall=False)
    assert "linode_firewall" not in stack_json["resource"]
    assert not [r for r in resources(stack_json, "helm_release").values() if "cloud-firewall" in r["name"]]
    assert "firewall_controller_token" not in stack_json["variable"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tier": "premium"}, r"'tier' is 'premium': use one of standard, enterprise"),
        (
            {"tier": "enterprise"},
            r"'k8s_version' is '1.34': LKE Enterprise takes a full version such as v1.31.8\+lke5",
        ),
        # Turned off, the firewall would be deleted with its id left on both pools (firewall_id is
        # Optional+Computed): refused at synth, on a new stack as on a deployed one.
        (
            {**ENTERPRISE, "firewall": False},
            r"'firewall' is False: LKE Enterprise keeps a pool's firewall_id once set",
        ),
    ],
)
def test_bad_tier_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        synth(**overrides)


def test_a_literal_controller_token_fails():
    with pytest.raises(ConfigError, match=r"'firewall_controller_token' is '\(hidden\)': give a reference"):
        LkeProps(
            label="x",
            api_allowlist=[],
            ui_allowlist=["0.0.0.0/0"],
            runner_allowlist=RUNNER,
            firewall_label="ops-nodes",
            firewall_controller_token="0123456789abcdef" * 4,
        )


def test_a_malformed_controller_token_fails_in_terraform(variables_dir):
    result = plan(variables_dir, firewall_controller_token="not,a token")
    assert result.returncode != 0
    assert "firewall_controller_token must be a Linode API token" in " ".join(result.stderr.split())


def unprotected_load_balancers(stack) -> list[str]:
    """Every rendered LoadBalancer Service must carry the CCM's firewall ACL with an IPv4 allowlist:
    a NodeBalancer reaches the nodes from 192.168.255.0/24, past the node firewall's UI rule."""
    from gpu_constructs.compute.lke import LB_FIREWALL_ACL

    problems = []
    for release, obj in stack.objects():
        if obj.get("kind") != "Service" or (obj.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        acl = ((obj.get("metadata") or {}).get("annotations") or {}).get(LB_FIREWALL_ACL)
        try:
            allowed = json.loads(acl)["allowList"]["ipv4"] if acl else []
        except (ValueError, KeyError, TypeError):
            allowed = []
        if not allowed:
            problems.append(f"{release.address}: Service {obj['metadata']['name']} has no {LB_FIREWALL_ACL}")
    return problems


def test_every_load_balancer_service_carries_the_firewall_acl(helm, upstream):
    import copy

    from tests.support import render
    from tests.support.stacks import INSTANCES

    stack = render.rendered(INSTANCES["lke"])
    assert unprotected_load_balancers(stack) == []
    # Not vacuous: a LoadBalancer Service without the annotation is caught, one with it passes.
    broken = copy.deepcopy(stack)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ui"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
    }
    broken.releases[0].objects.append(service)
    assert unprotected_load_balancers(broken) == [
        f"{broken.releases[0].address}: Service ui has no service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"
    ]
    # the value as Terraform makes it (test below), for a ui_allowed_cidrs of one network
    (key,) = stack.synthesized["output"]["load_balancer_annotations"]["value"]
    service["metadata"]["annotations"] = {key: '{"allowList":{"ipv4":["192.0.2.0/24"]}}'}
    assert unprotected_load_balancers(broken) == []


def test_the_load_balancer_acl_is_the_ui_allowlist_in_real_terraform(stack_json, tmp_path):
    annotations = stack_json["output"]["load_balancer_annotations"]["value"]
    directory = variables_workdir(stack_json["variable"], tmp_path)
    config = json.loads((directory / "main.tf.json").read_text())
    config["output"] = {"acl": {"value": annotations}}
    (directory / "main.tf.json").write_text(json.dumps(config))
    result = plan(directory, ui_allowed_cidrs='["203.0.113.0/24", "198.51.100.0/24"]')
    assert result.returncode == 0, result.stderr
    # Terraform shows a JSON string as the jsonencode of what it decodes to
    shown = " ".join(result.stdout.split())
    assert (
        '"service.beta.kubernetes.io/linode-loadbalancer-firewall-acl" = jsonencode( { + allowList = { '
        '+ ipv4 = [ + "203.0.113.0/24", + "198.51.100.0/24", ] } } )'
    ) in shown, shown
    assert synth(firewall=False)["output"]["load_balancer_annotations"]["value"] == {}


def test_make_kubeconfig_writes_the_output_with_mode_0600_on_a_fresh_clone(tmp_path):
    """kubeconfig/ is not in the repository: the target creates it, then the file with mode 0600,
    then writes terraform's output into it (a stub terraform records its arguments)."""
    import os
    import shutil
    import stat
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[2]
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "terraform").write_text(
        f'#!/bin/bash\necho "$*" > {tmp_path}/terraform.args\necho "apiVersion: v1"\n'
    )
    (stub / "terraform").chmod(0o755)
    clone = tmp_path / "clone"
    clone.mkdir()
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", str(root / "Makefile"), "kubeconfig", "STACK=lke"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    written = clone / "kubeconfig" / "lke.yaml"
    assert written.read_text() == "apiVersion: v1\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "terraform.args").read_text().split() == [
        "-chdir=cdktf.out/stacks/lke",
        "output",
        "-raw",
        "kubeconfig",
    ]


def test_enterprise_pools_follow_the_clusters_version(enterprise_json, stack_json):
    """LKE Enterprise versions the pools on their own: both carry the cluster's version and a rolling
    update, so a k8s_version bump moves the nodes too; the standard tier has neither."""
    cluster = one(enterprise_json, "linode_lke_cluster")
    pools = [cluster["pool"][0], one(enterprise_json, "linode_lke_node_pool")]
    for pool in pools:
        assert (pool["k8s_version"], pool["update_strategy"]) == ("v1.34.1+lke1", "rolling_update")
    for pool in [one(stack_json, "linode_lke_cluster")["pool"][0], one(stack_json, "linode_lke_node_pool")]:
        assert "k8s_version" not in pool and "update_strategy" not in pool


def test_the_apply_waits_for_a_gpu_job_that_proves_the_nvidia_runtime(helm, upstream):
    """The GPU Operator's device plugin runs with RuntimeClass nvidia; the Job gets its GPU only once
    that plugin runs, and Helm (wait_for_jobs, backoffLimit 0) fails the apply when the Job fails or
    hits its deadline, which is below the release's timeout."""
    from tests.support import render
    from tests.support.placement import node_groups, pod_templates, why_not
    from tests.support.stacks import INSTANCES

    stack = render.rendered(INSTANCES["lke"])
    (release,) = [r for r in stack.releases if r.name == "gpu-smoke-test"]
    assert release.raw["wait_for_jobs"] is True and release.raw["atomic"] is True
    (operator,) = [r for r in stack.releases if r.chart == "gpu-operator"]
    assert operator.address in release.raw["depends_on"]
    (job,) = [o for o in release.objects if o["kind"] == "Job"]
    assert job["spec"]["backoffLimit"] == 0
    assert 0 < job["spec"]["activeDeadlineSeconds"] < release.raw["timeout"]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    (template,) = [t for t in pod_templates(stack) if t.where.startswith(release.address)]
    assert [g.name for g in node_groups(stack) if why_not(template.spec, g) is None] == ["gpu pool"]
    # the operator's operands, the device plugin among them, ask for the nvidia handler
    (policy,) = [o for o in operator.objects if o["kind"] == "ClusterPolicy"]
    assert policy["spec"]["operator"]["runtimeClass"] == "nvidia"
    assert "gpu-smoke-test" not in {
        r["name"] for r in resources(synth(smoke_test=False), "helm_release").values()
    }


def test_the_cluster_is_protected_from_destroy_and_replacement(stack_json):
    """A replacement (region, tier) would delete the old cluster with its releases installed: their
    uninstall runs against the new cluster's provider configuration, or not at all (helm provider
    v3.1.1 drops a release it cannot look up). prevent_destroy refuses that plan; protect_cluster=False
    lifts it for a deliberate `cdktf destroy`."""
    assert one(stack_json, "linode_lke_cluster")["lifecycle"]["prevent_destroy"] is True
    assert "prevent_destroy" not in one(synth(protect_cluster=False), "linode_lke_cluster")["lifecycle"]


def terraform_in(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One terraform command in ``directory``, without input; a failing plan (exit 1) is returned
    for the test to read, anything else fails it (tests.conftest.run_terraform)."""
    return run_terraform(terraform_binary(), directory, dict(os.environ), *args, "-input=false", codes=(0, 1))


def test_terraform_refuses_a_plan_that_replaces_the_protected_cluster(stack_json, tmp_path):
    """The cluster's own lifecycle block on a stand-in that a variable replaces: real Terraform
    applies it, then fails the plan of its replacement."""
    lifecycle = {"prevent_destroy": one(stack_json, "linode_lke_cluster")["lifecycle"]["prevent_destroy"]}
    config = {
        "variable": {"region": {"type": "string"}},
        "resource": {
            "terraform_data": {"cluster": {"triggers_replace": "${var.region}", "lifecycle": lifecycle}}
        },
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))

    terraform = partial(terraform_in, tmp_path)

    assert terraform("init").returncode == 0
    assert terraform("apply", "-auto-approve", "-var=region=us-ord").returncode == 0
    assert terraform("plan", "-var=region=us-ord").returncode == 0
    refused = terraform("plan", "-var=region=us-sea")
    assert refused.returncode != 0 and "prevent_destroy" in " ".join(refused.stderr.split())


def test_a_replaced_gpu_pool_is_ready_before_the_old_one_goes(stack_json, enterprise_json, tmp_path):
    """A new gpu_plan replaces linode_lke_node_pool (`type` is RequiresReplace in provider v3.13.0):
    destroyed first, the old GPU nodes are gone while the new pool is provisioned. Both tiers' pools
    are create_before_destroy, and real Terraform, given the pool's lifecycle on a stand-in that a
    variable replaces, plans the create before the delete."""
    for synthesized in (stack_json, enterprise_json):
        assert one(synthesized, "linode_lke_node_pool")["lifecycle"]["create_before_destroy"] is True
    lifecycle = one(stack_json, "linode_lke_node_pool")["lifecycle"]
    stand_in = {key: value for key, value in lifecycle.items() if key != "ignore_changes"}
    config = {
        "variable": {"gpu_plan": {"type": "string"}},
        "resource": {
            "terraform_data": {"gpu_pool": {"triggers_replace": "${var.gpu_plan}", "lifecycle": stand_in}}
        },
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))

    terraform = partial(terraform_in, tmp_path)

    assert terraform("init").returncode == 0
    assert terraform("apply", "-auto-approve", "-var=gpu_plan=g2-gpu-rtx4000a1-s").returncode == 0
    assert terraform("plan", "-out=replace.tfplan", "-var=gpu_plan=g2-gpu-rtx4000a2-m").returncode == 0
    shown = subprocess.run(
        [terraform_binary(), "show", "-json", "replace.tfplan"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (change,) = json.loads(shown.stdout)["resource_changes"]
    assert change["change"]["actions"] == ["create", "delete"]


def test_the_page_tells_how_to_recover_from_the_helm_providers_state_loss(stack_json):
    """helm provider 3.1.1 drops a release it cannot look up from the state (#1669): the page names
    the hazard for the pinned version and gives the targeted apply of this stack's cluster address,
    whose refresh reads no release."""
    from gpu_constructs import versions

    page = " ".join((Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text().split())
    (address,) = resources(stack_json, "linode_lke_cluster")
    assert f"terraform apply -target=linode_lke_cluster.{address}" in page
    assert "hashicorp/terraform-provider-helm#1669" in page
    assert f"helm provider ({versions.TERRAFORM_PROVIDER_HELM.version}" in page
    # the import id the provider parses (parseImportIdentifier): <namespace>/<release name>
    traefik = resources(stack_json, "helm_release")["traefik"]
    assert f"terraform import helm_release.traefik {traefik['namespace']}/{traefik['name']}" in page


# plan -> its GPUs and a region offering it (Linode's GPU plan table)
GPU_PLANS = {
    "g2-gpu-rtx4000a1-s": (1, "us-ord"),
    "g2-gpu-rtx4000a2-m": (2, "us-ord"),
    "g2-gpu-rtx4000a4-m": (4, "us-ord"),
    "g3-gpu-rtxpro6000-blackwell-1": (1, "us-sea"),
    "g3-gpu-rtxpro6000-blackwell-2": (2, "us-sea"),
    "g3-gpu-rtxpro6000-blackwell-4": (4, "us-sea"),
}


@pytest.mark.parametrize("plan", sorted(GPU_PLANS))
@pytest.mark.parametrize("replicas", [1, 2])
def test_the_clusters_gpu_slots_count_the_plans_gpus(plan, replicas):
    """The contract's capacity (GPUs x time-slicing replicas) and the most one pod can ask for
    follow the plan: a 2-GPU plan is not refused a 4-GPU demand on two nodes, and a pod asking for
    more than a node has is refused at synth."""
    from cdktf import TerraformStack

    from gpu_constructs.cluster import GpuSharing
    from gpu_constructs.compute.lke import LkeGpuCompute

    gpus, region = GPU_PLANS[plan]
    stack = TerraformStack(cdktf.Testing.app(), "s")
    cluster = LkeGpuCompute(
        stack,
        "lke",
        props=LkeProps(
            label="x-lke",
            api_allowlist=["192.0.2.0/24"],
            ui_allowlist=["192.0.2.0/24"],
            runner_allowlist=["192.0.2.7/32"],
            firewall_label="x-lke-gpu-nodes",
            region=region,
            gpu_plan=plan,
            gpu_max_nodes=2,
            firewall=False,
            sharing=GpuSharing(time_slicing_replicas=replicas),
        ),
    ).cluster
    assert (cluster.gpu_capacity, cluster.gpus_per_node) == (gpus * 2 * replicas, gpus * replicas)
    cluster.check_gpu_demand("replicas", 2 * gpus * replicas, 1)
    cluster.check_pod_fits("gpus", gpus * replicas)
    with pytest.raises(ConfigError, match="never schedules"):
        cluster.check_pod_fits("gpus", gpus * replicas + 1)


def test_the_page_states_who_reaches_node_exporter(stack_json):
    """Port 9100 is open to LKE's whole private range (the firewall cannot name the cluster's nodes):
    the page says so while the rule exists."""
    from gpu_constructs.compute.lke import LKE_PRIVATE

    page = " ".join((Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text().split())
    (ruleset,) = [
        r for r in resources(stack_json, "helm_release").values() if r["name"] == "cloud-firewall-ruleset"
    ]
    node_rule = release_values(ruleset)["manifests"][0]["spec"]["ruleset"]["inbound"][0]
    assert (node_rule["ports"], node_rule["addresses"]["ipv4"]) == ("9100", [LKE_PRIVATE])
    assert f"{LKE_PRIVATE} is the data center's private network, shared by every Linode" in page
    assert "read node-exporter's unauthenticated metrics" in page


def test_the_page_shows_a_failed_smoke_test_that_its_atomic_release_removed(stack_json, tmp_path):
    from tests.support.stacks import run_the_pages_smoke_job_command

    page = (Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text()
    (release,) = [r for r in resources(stack_json, "helm_release").values() if r["name"] == "gpu-smoke-test"]
    assert release["atomic"] is True
    job = run_the_pages_smoke_job_command(page, "lke", stack_json, tmp_path)
    assert job == release_values(release)["manifests"][0] and job["kind"] == "Job"
    assert "get events -n gpu-smoke-test -w" in " ".join(page.split())


def test_the_teardown_refreshes_an_expired_controller_token_first():
    """A destroy does not update Secret kube-system/linode-cfw, and with a token Linode refuses the
    controller cannot remove its CloudFirewall's finalizer (v0.2.1 checkFinalizer retries): the page
    says to deploy a fresh token first and where a left firewall shows."""
    page = " ".join((Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text().split())
    teardown = page.split("## Teardown", 1)[1].split("## ", 1)[0]
    assert "run `npx cdktf deploy lke` with a fresh `TF_VAR_firewall_controller_token` first" in teardown
    assert "`linode-cli firewalls list`, label `lke-<cluster id>`" in teardown


@pytest.mark.parametrize("path", ["manifests[0].stringData.token", "a\\.b", "a..b"])
def test_a_set_sensitive_path_the_helm_provider_cannot_cloak_fails_at_synth(path):
    from cdktf import TerraformStack

    from tests.conftest import make_cluster

    stack = TerraformStack(cdktf.Testing.app(), "s")
    with pytest.raises(ConfigError) as error:
        helm_lib.release(
            stack,
            "r",
            cluster=make_cluster(),
            name="r",
            chart="c",
            namespace="n",
            values={},
            set_sensitive={path: "${var.t}"},
        )
    assert (error.value.field, error.value.value) == ("set_sensitive", path)
    helm_lib.release(
        stack,
        "ok",
        cluster=make_cluster(),
        name="r",
        chart="c",
        namespace="n",
        values={},
        set_sensitive={"a.b": "x"},
    )


def test_the_page_says_to_rotate_the_token_earlier_versions_exposed():
    page = " ".join((Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text().split())
    assert "passed the token through `manifests[0].stringData.token`" in page
    assert "revoke that token in Cloud Manager (API Tokens) first" in page


def test_a_new_system_plan_is_refused_until_a_standby_pool_runs(stack_json, enterprise_json, tmp_path):
    """The cluster resource replaces its own pool create-then-delete and waits for the new nodes
    only after the delete (provider v3.13.0 linode/lke/resource.go updateResource), which leaves the
    system pods without a node. On both tiers the pool's type is ignored and a postcondition compares
    the state's type with system_plan. Real Terraform, on a stand-in whose input is the cluster's
    pool: the deployed plan passes, a new one fails the plan with the way out; with a standby pool
    the cluster has neither, so the change goes through, and the standby is its own external pool."""
    for synthesized in (stack_json, enterprise_json):
        cluster = one(synthesized, "linode_lke_cluster")
        assert cluster["lifecycle"]["ignore_changes"] == ["pool[0].type"]
        assert cluster["lifecycle"]["prevent_destroy"] is True

    terraform = partial(terraform_in, tmp_path)

    def stand_in(synthesized: dict | None, plan: str, count: int = 2) -> None:
        """The cluster's pool as a terraform_data input, with the synthesized stack's lifecycle
        (its ignore_changes and postcondition, moved under ``input``)."""
        cluster: dict = {"input": {"pool": [{"type": plan, "count": count}]}}
        if synthesized is not None:
            lifecycle = one(synthesized, "linode_lke_cluster")["lifecycle"]
            cluster["lifecycle"] = {
                key: [f"input.{path}" for path in lifecycle[key]] if key == "ignore_changes" else [
                    {k: v.replace("self.", "self.input.") for k, v in condition.items()}
                    for condition in lifecycle[key]
                ]
                for key in ("ignore_changes", "postcondition") if key in lifecycle
            }  # fmt: skip
        config = {"resource": {"terraform_data": {"cluster": cluster}}}
        (tmp_path / "main.tf.json").write_text(json.dumps(config))

    stand_in(None, "g6-standard-2")
    assert terraform("apply", "-auto-approve").returncode == 0
    stand_in(stack_json, "g6-standard-2", count=3)
    counted = terraform("plan")
    assert counted.returncode == 0 and "count = 2 -> 3" in counted.stdout, counted.stderr
    stand_in(synth(system_plan="g6-standard-4"), "g6-standard-4")
    refused = terraform("plan")
    message = " ".join(refused.stderr.split())
    assert refused.returncode != 0
    assert "The system pool runs g6-standard-2, not system_plan g6-standard-4" in message
    assert "system_standby_plan" in message

    standby = synth(system_plan="g6-standard-4", system_standby_plan="g6-standard-4")
    cluster = one(standby, "linode_lke_cluster")
    assert not {"ignore_changes", "postcondition"} & set(cluster["lifecycle"])
    assert cluster["pool"][0]["type"] == "g6-standard-4"
    pools = {pool["label"]: pool for pool in resources(standby, "linode_lke_node_pool").values()}
    assert pools["system-standby"]["type"] == "g6-standard-4"
    assert pools["system-standby"]["node_count"] == 2
    assert set(pools["system-standby"]["tags"]) <= set(cluster["external_pool_tags"])
    assert "taint" not in pools["system-standby"]
    assert pools["system-standby"]["labels"] == {"system-standby": "true"}
    stand_in(standby, "g6-standard-4")
    changed = terraform("plan")
    assert changed.returncode == 0 and '"g6-standard-2" -> "g6-standard-4"' in changed.stdout, changed.stderr
    page = (Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text()
    section = " ".join(page.split("## Change the system plan", 1)[1].split("\n## ", 1)[0].split())
    for step in ('"system_standby_plan": "<new plan>"', "drain -l '!system-standby,!nvidia.com/gpu'"):
        assert step in section, step


@pytest.mark.parametrize(
    ("setting", "deployed", "passes"),
    [
        ("1.34", [], True),  # a first deploy: no cluster with that label yet
        ("1.34", ["1.34"], True),
        ("1.34", ["1.33"], True),
        ("1.34", ["1.32"], False),  # a skipped minor
        ("1.33", ["1.34"], False),  # a lower one
        ("v1.34.1+lke1", ["v1.33.4+lke2"], True),
        ("v1.34.1+lke1", ["v1.34.0+lke3"], True),
        ("v1.34.1+lke1", ["v1.32.9+lke1"], False),
    ],
)
def test_a_version_more_than_one_minor_away_from_the_deployed_one_is_refused(
    setting, deployed, passes, tmp_path
):
    """A new k8s_version recycles every node of every pool, GPU pool included (provider v3.13.0
    linode/lke/resource.go, recycleLKECluster), so each step must be one Kubernetes allows. The
    cluster's precondition reads the deployed version from linode_lke_clusters, found by the
    cluster's label and depending on no resource (read at plan). Real Terraform evaluates it on a
    stand-in, a variable answering for the data source."""
    overrides = (
        {"k8s_version": setting} if setting.startswith("1.") else {**ENTERPRISE, "k8s_version": setting}
    )
    synthesized = synth(**overrides)
    ((name, data),) = synthesized["data"]["linode_lke_clusters"].items()
    assert data == {
        "filter": [{"name": "label", "values": [one(synthesized, "linode_lke_cluster")["label"]]}]
    }
    (guard,) = one(synthesized, "linode_lke_cluster")["lifecycle"]["precondition"]
    answered = {key: value.replace(f"data.linode_lke_clusters.{name}.lke_clusters", "var.deployed")
                for key, value in guard.items()}  # fmt: skip
    config = {
        "variable": {"deployed": {"type": "list(object({k8s_version = string}))"}},
        "resource": {
            "terraform_data": {"cluster": {"input": setting, "lifecycle": {"precondition": [answered]}}}
        },
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    listed = json.dumps([{"k8s_version": version} for version in deployed])
    planned = subprocess.run(
        [terraform_binary(), "plan", "-input=false", "-no-color", f"-var=deployed={listed}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    message = " ".join(planned.stderr.split())
    assert (planned.returncode == 0) is passes, message
    if not passes:
        assert f"The cluster runs Kubernetes {deployed[0]}, and k8s_version {setting}" in message
        assert "deploy each minor in turn" in message
        page = (Path(__file__).resolve().parents[2] / "docs" / "lke.md").read_text()
        section = " ".join(page.split("## Upgrade Kubernetes", 1)[1].split("\n## ", 1)[0].split())
        assert "PodDisruptionBudget" in section and "linode-cli lke versions-list" in section


def pool(plan: str, *tags: str, ready: bool = True) -> dict:
    return {"type": plan, "tags": list(tags), "nodes": [{"status": "ready" if ready else "not_ready"}] * 2}


@pytest.mark.parametrize(
    ("system_plan", "deployed", "passes"),
    [
        ("g6-standard-4", [], True),  # a first deploy
        # the standby added, system_plan unchanged
        ("g6-standard-2", [[pool("g6-standard-2"), pool("g2-gpu-rtx4000a1-s", "gpu-pool")]], True),
        # the standby and a new system_plan in one deploy
        ("g6-standard-4", [[pool("g6-standard-2"), pool("g2-gpu-rtx4000a1-s", "gpu-pool")]], False),
        ("g6-standard-4", [[pool("g6-standard-2"), pool("g6-standard-4", "system-standby")]], True),
        (
            "g6-standard-4",
            [[pool("g6-standard-2"), pool("g6-standard-4", "system-standby", ready=False)]],
            False,
        ),
    ],
)
def test_a_new_system_plan_waits_for_a_ready_standby(system_plan, deployed, passes, tmp_path):
    """With system_standby_plan the cluster's type is no longer ignored, so a precondition reads the
    deployed pools (linode_lke_cluster by the id linode_lke_clusters found, both at plan): a new
    system_plan passes only once a pool tagged system-standby runs with every node ready, so the
    standby and the new plan in one deploy (the cluster's update first) is refused. Real Terraform on
    a stand-in, a variable answering for the data source."""
    synthesized = synth(system_plan=system_plan, system_standby_plan="g6-standard-4")
    ((name, data),) = synthesized["data"]["linode_lke_cluster"].items()
    ((listed_name, _),) = synthesized["data"]["linode_lke_clusters"].items()
    assert data["id"] == f"${{data.linode_lke_clusters.{listed_name}.lke_clusters[count.index].id}}"
    assert data["count"] == f"${{length(data.linode_lke_clusters.{listed_name}.lke_clusters)}}"
    (guard,) = [
        condition
        for condition in one(synthesized, "linode_lke_cluster")["lifecycle"]["precondition"]
        if f"data.linode_lke_cluster.{name}" in condition["condition"]
    ]
    answered = {k: v.replace(f"data.linode_lke_cluster.{name}", "var.deployed") for k, v in guard.items()}
    node = "list(object({status = string}))"
    config = {
        "variable": {
            "deployed": {
                "type": f"list(object({{pools = list(object({{type = string, tags = list(string), nodes = {node}}}))}}))"
            }
        },
        "resource": {
            "terraform_data": {"cluster": {"input": system_plan, "lifecycle": {"precondition": [answered]}}}
        },
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    value = json.dumps([{"pools": pools} for pools in deployed])
    planned = subprocess.run(
        [terraform_binary(), "plan", "-input=false", "-no-color", f"-var=deployed={value}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    message = " ".join(planned.stderr.split())
    assert (planned.returncode == 0) is passes, message
    if not passes:
        assert (
            f"system_plan {system_plan} would replace the running system pool before the standby" in message
        )
