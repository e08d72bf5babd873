"""Quality gates over every stack main.py synthesizes: upstream validity and determinism.

A stack added to main.py is covered without touching this file; a chart none of the tables below
knows fails here until its upstream schema is added or it is listed as unchecked with a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import cdktf
import pytest
import yaml

import main
from tests.conftest import release_values, resources, synth_main, terraform_binary
from tests.support.gates import UNCHECKED_CHARTS
from tests.support.lifecycle import graph
from tests.support.validators import unknown_keys, validate_manifest, validate_values

# chart -> published values schema under ../shared/upstream
VALUES_SCHEMAS = {
    "cert-manager": "cert-manager/values.schema.json",
    "vault": "vault-helm/values.schema.json",
    "jupyterhub": "jupyterhub/values.schema.yaml",
    "external-dns": "charts/external-dns-1.21.1/values.schema.json",
}
# chart -> default values under ../shared/upstream: every key set must exist there (free-form maps
# excepted), which catches a typo even where a published schema allows unknown keys (vault-helm's does)
DEFAULT_VALUES = {
    "vault": "vault-helm/values.yaml",
    "jupyterhub": "jupyterhub/values.yaml",
    "gpu-operator": "gpu-operator/values.yaml",
    "nvidia-device-plugin": "nvidia-device-plugin/values.yaml",
    "karpenter": "karpenter/values.yaml",
    "keda": "charts/keda-2.20.2/values.yaml",
    "keda-add-ons-http": "charts/keda-add-ons-http-0.15.0/values.yaml",
    "external-dns": "charts/external-dns-1.21.1/values.yaml",
}
# chart -> values paths that hold free-form maps by design, which the defaults cannot list: z2jh's
# hub.config passes traitlets configuration of any class through (its schema: patternProperties
# '^[A-Z].*$'), e.g. Authenticator or GitHubOAuthenticator; the published schema still checks them
FREE_FORM_PATHS = {"jupyterhub": ("hub.config.",)}

STACKS = [instance.stack for instance in main.INSTANCES]


@pytest.fixture(scope="module", params=STACKS)
def stack_json(request) -> dict:
    (instance,) = [i for i in main.INSTANCES if i.stack == request.param]
    return json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))


def _is_manifests_chart(release: dict) -> bool:
    return "manifests-chart" in release["chart"]


def test_every_manifest_is_valid_upstream(stack_json, upstream):
    for release in resources(stack_json, "helm_release").values():
        if _is_manifests_chart(release):
            for manifest in release_values(release)["manifests"]:
                validate_manifest(manifest, upstream)


def test_the_gate_sees_manifests():
    """Not vacuous: the stacks do render objects for the gate above to check."""
    rendered = 0
    for instance in main.INSTANCES:
        stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
        rendered += sum(
            len(release_values(r)["manifests"])
            for r in resources(stack, "helm_release").values()
            if _is_manifests_chart(r)
        )
    assert rendered >= 20


def test_every_chart_values_document_is_valid_upstream(stack_json, upstream):
    for release in resources(stack_json, "helm_release").values():
        chart = release["chart"]
        if _is_manifests_chart(release):
            continue
        values = release_values(release)
        assert chart in VALUES_SCHEMAS or chart in DEFAULT_VALUES or chart in UNCHECKED_CHARTS, (
            f"chart {chart!r}: add its upstream schema or defaults, or list it as unchecked with a reason"
        )
        if chart in VALUES_SCHEMAS:
            defaults = upstream / DEFAULT_VALUES[chart] if chart in DEFAULT_VALUES else None
            validate_values(values, upstream / VALUES_SCHEMAS[chart], defaults)
        if chart in DEFAULT_VALUES:
            defaults = yaml.safe_load((upstream / DEFAULT_VALUES[chart]).read_text())
            unknown = unknown_keys(values, defaults)
            unknown = [key for key in unknown if not key.startswith(FREE_FORM_PATHS.get(chart, ()))]
            assert unknown == [], f"{chart}: keys the chart does not have"


def test_a_mistyped_values_key_is_caught(upstream):
    with pytest.raises(Exception, match="Additional properties are not allowed"):
        validate_values({"crds": {"enabeld": True}}, upstream / VALUES_SCHEMAS["cert-manager"])
    vault = yaml.safe_load((upstream / DEFAULT_VALUES["vault"]).read_text())
    assert unknown_keys({"server": {"standalon": {"enabled": True}}}, vault) == ["server.standalon"]
    operator = yaml.safe_load((upstream / DEFAULT_VALUES["gpu-operator"]).read_text())
    assert unknown_keys({"dcgmExporter": {"enable": True}}, operator) == ["dcgmExporter.enable"]


def test_an_invalid_node_pool_is_caught(upstream):
    node_pool = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "gpu"},
        "spec": {
            "template": {
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                    "requirements": [],
                }
            },
            "disruption": {"consolidationPolicy": "WhenIdle", "consolidateAfter": "5 minutes"},
        },
    }
    with pytest.raises(Exception, match=r"WhenIdle|5 minutes"):
        validate_manifest(node_pool, upstream)


def test_an_invalid_manifest_is_caught(upstream):
    issuer = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "x"},
        "spec": {"acme": {"server": "https://a"}},
    }
    with pytest.raises(Exception, match="required property"):
        validate_manifest(issuer, upstream)
    with pytest.raises(Exception, match="Additional properties"):
        validate_manifest(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spce": {}}, upstream
        )


def test_all_stacks_synthesize_byte_identically_twice(tmp_path):
    first = synth_main(tmp_path / "a")
    second = synth_main(tmp_path / "b")
    assert {path.split("/")[1] for path in first} == set(STACKS)
    assert first == second


def nested_interpolations(text: str) -> list[int]:
    """The offsets in ``text`` (a JSON string, which Terraform reads as a template) of each ``${``
    or ``%{`` that opens inside an interpolation's expression outside any quoted string. HCL's
    template grammar (hclsyntax) has no such production: a literal ``"${var.x}"`` pasted into
    another expression fails at plan with "Invalid character" where it should have been ``var.x``."""
    found: list[int] = []
    # each frame: "top" (the JSON string), "str" (a quoted string inside an expression) or an
    # expression with its count of open braces
    stack: list[str | list[int]] = ["top"]
    i = 0
    while i < len(text):
        frame = stack[-1]
        if isinstance(frame, str):
            if text.startswith(("$${", "%%{"), i):
                i += 3
                continue
            if text.startswith(("${", "%{"), i):
                stack.append([0])
                i += 2
                continue
            if frame == "str" and text[i] == "\\":
                i += 2
                continue
            if frame == "str" and text[i] == '"':
                stack.pop()
            i += 1
            continue
        if text.startswith(("${", "%{"), i):
            found.append(i)
            frame[0] += 1
            i += 2
            continue
        char = text[i]
        if char == '"':
            stack.append("str")
        elif char == "{":
            frame[0] += 1
        elif char == "}":
            if frame[0] == 0:
                stack.pop()
            else:
                frame[0] -= 1
        i += 1
    return found


def _strings(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def test_every_interpolation_holds_one_expression(stack_json):
    nested = {path: text for path, text in _strings(stack_json) if nested_interpolations(text)}
    assert nested == {}


def test_the_interpolation_gate_sees_a_pasted_reference():
    assert nested_interpolations('${regexall("a", ${var.keys[0]})[0]}') == [16]
    assert nested_interpolations('${regexall("a", var.keys[0])[0]}') == []
    # a template inside a quoted string, an escape, and braces of an object are all valid
    assert nested_interpolations('${join(",", ["${var.a}-x", "$${b}"])} and ${ {a = 1}.a }') == []
    assert nested_interpolations("%{ if var.on }${var.a}%{ endif }") == []


def test_every_stack_is_a_graph_terraform_accepts(stack_json):
    """Terraform refuses a dependency cycle at plan ("Error: Cycle"): none, by depends_on, references
    or a provider's configuration (tests/support/lifecycle/graph.py)."""
    assert graph.find_cycle(stack_json) is None


def test_terraform_validates_every_stacks_graph(stack_json, tmp_path):
    """The same question to the real Terraform, on the stack's graph with terraform_data stand-ins."""
    assert _validate_graph(graph.stand_in(stack_json), tmp_path).returncode == 0


def test_the_cycle_gate_sees_a_back_edge(tmp_path):
    """A stack that validates gets one edge back to something that depends on it: both the model
    and Terraform refuse it."""
    (instance,) = [i for i in main.INSTANCES if i.stack == "k3d-poc"]
    stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    assert graph.find_cycle(stack) is None
    releases = stack["resource"]["helm_release"]
    dependent = next(
        name
        for name, body in releases.items()
        if any("helm_release." in d for d in body.get("depends_on", []))
    )
    needed = next(d for d in releases[dependent]["depends_on"] if d.startswith("helm_release."))
    needed_body = releases[needed.split(".", 1)[1]]
    needed_body["depends_on"] = [*needed_body.get("depends_on", []), f"helm_release.{dependent}"]
    cycle = graph.find_cycle(stack)
    assert cycle is not None and f"helm_release.{dependent}" in cycle and needed in cycle
    refused = _validate_graph(graph.stand_in(stack), tmp_path)
    assert refused.returncode != 0 and "Cycle" in refused.stderr


def _validate_graph(configuration: dict, directory) -> subprocess.CompletedProcess[str]:
    (directory / "main.tf.json").write_text(json.dumps(configuration))
    environment = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    init = subprocess.run(
        [terraform_binary(), "init", "-backend=false", "-input=false", "-no-color"],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    return subprocess.run(
        [terraform_binary(), "validate", "-no-color"],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def uncloaked_sensitive_values(stack: dict) -> list[str]:
    """Each ``set_sensitive`` of a helm_release that the helm provider would write in clear text into
    the release's ``metadata.values`` (state, ``terraform show``, every plan that updates or
    destroys it), and each sensitive variable that reaches a release by another way.

    terraform-provider-helm v3.1.1 (helm/resource_helm_release.go, cloakSetValue, called from
    setReleaseAttributes and logValues) splits a ``set_sensitive`` name on ``.`` and walks the
    user values by map keys: a list index (``manifests[0].x``) or an escaped dot (``a\\.b``) is not a
    key of the map, the walk stops and the value is left in ``metadata.values``, which is neither
    Sensitive in the schema nor cloaked otherwise (only ``set_sensitive`` is; ``set`` and ``set_wo``
    are not)."""
    from gpu_constructs.helm import deep_merge

    found = []
    sensitive = {name for name, body in stack.get("variable", {}).items() if body.get("sensitive")}
    for key, release in resources(stack, "helm_release").items():
        values: dict = {}
        for document in release.get("values", []):
            values = deep_merge(values, yaml.safe_load(document) or {})
        for entry in release.get("set_sensitive", []):
            name = entry["name"]
            keys = name.split(".")
            if any(char in name for char in "[]\\") or "" in keys:
                found.append(f"helm_release.{key}: set_sensitive {name!r} is not a path of map keys")
                continue
            node: object = values
            for part in keys[:-1]:
                node = node.get(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                found.append(f"helm_release.{key}: set_sensitive {name!r} runs through a non-map value")
        others = json.dumps({k: v for k, v in release.items() if k != "set_sensitive"})
        for variable in sorted(sensitive):
            if f"var.{variable}" in others:
                found.append(f"helm_release.{key}: sensitive var.{variable} outside set_sensitive")
    return found


def test_every_sensitive_helm_value_is_cloaked_in_the_release_metadata(stack_json):
    assert uncloaked_sensitive_values(stack_json) == []


def test_the_cloak_gate_sees_a_list_index_and_a_sensitive_set():
    """A stack that passes gets the shapes the helm provider cannot cloak: the gate names each."""
    (instance,) = [i for i in main.INSTANCES if i.stack == "lke"]
    stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    assert uncloaked_sensitive_values(stack) == []
    releases = stack["resource"]["helm_release"]
    name = sorted(releases)[0]
    token = "${var.firewall_controller_token}"
    releases[name]["set_sensitive"] = [
        {"name": "manifests[0].stringData.token", "value": token},
        {"name": "a\\.b", "value": token},
        {"name": "fine.path", "value": token},
    ]
    releases[name]["values"] = [*releases[name].get("values", []), "x:\n- 1\n"]
    releases[name]["set_sensitive"].append({"name": "x.y", "value": token})
    releases[name]["set"] = [{"name": "plain", "value": token}]
    assert uncloaked_sensitive_values(stack) == [
        f"helm_release.{name}: set_sensitive 'manifests[0].stringData.token' is not a path of map keys",
        f"helm_release.{name}: set_sensitive 'a\\\\.b' is not a path of map keys",
        f"helm_release.{name}: set_sensitive 'x.y' runs through a non-map value",
        f"helm_release.{name}: sensitive var.firewall_controller_token outside set_sensitive",
    ]
