"""Gate: every pod a stack runs where a LimitRange or a GPU quota applies is admitted and gets at
most the GPUs it asks for (model and upstream references in tests/support/lifecycle/limitranges.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.lifecycle import limitranges

# (stack, release, pod maker) -> issue that fixes it
KNOWN: dict[tuple[str, str, str], int] = {}


def unexpected(rendered: Any) -> tuple[dict[tuple[str, str, str], str], list[tuple[str, str, str]]]:
    found = {finding.key: finding.problem for finding in limitranges.findings(rendered)}
    new = {key: problem for key, problem in found.items() if key not in KNOWN}
    gone = [key for key in KNOWN if key[0] == rendered.stack and key not in found]
    return new, gone


def test_every_pod_is_admitted_with_the_gpus_it_asks_for(rendered_stack):
    new, gone = unexpected(rendered_stack)
    assert new == {}, f"{rendered_stack.stack}: pods the LimitRange refuses or gives GPUs"
    assert gone == [], f"{rendered_stack.stack}: fixed, remove from KNOWN in {__file__}"


@pytest.fixture
def single_node(helm, upstream):
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    return copy.deepcopy(render.rendered(instance))


def _limit_range(rendered: Any) -> dict[str, Any]:
    (found,) = [o for _, o in rendered.objects() if o["kind"] == "LimitRange"]
    return found


def test_the_gate_sees_the_app_and_its_injected_agent(single_node):
    """Not vacuous: the app's namespace has a LimitRange, the app pod gets the Vault agent, and the
    database's instance pods run there too."""
    assert _limit_range(single_node)["metadata"]["namespace"] == "ffe"
    pods = {name: pod for _, name, ns, pod, ann in limitranges._pods(single_node) if ns == "ffe"}
    assert "Cluster/ffe/ffe-db" in pods
    (app,) = [
        (pod, ann)
        for _, name, _, pod, ann in limitranges._pods(single_node)
        if name.startswith("Deployment/ffe/")
    ]
    agent = limitranges.vault_agent_resources(single_node)
    assert agent is not None and limitranges.inject_vault_agent(app[0], app[1], agent)
    assert [c["name"] for c in app[0]["containers"]] == ["app", "vault-agent"]


def test_a_gpu_max_refuses_or_defaults_every_pod_without_a_gpu(single_node):
    """A ``max`` on the GPU becomes the default limit: the injected agent containers and the
    database's pods each get one GPU, and the quota of one refuses them."""
    _limit_range(single_node)["spec"]["limits"][0]["max"] = {"nvidia.com/gpu": "1"}
    new, _ = unexpected(single_node)
    assert set(new) == {
        ("single-node", "helm_release.app_release_E0EC404F", "Deployment/ffe/ffe-backend"),
        ("single-node", "helm_release.postgres_cluster_ACE3EF20", "Cluster/ffe/ffe-db"),
    }
    assert "asks for 1 GPU(s) and is given 2" in new[next(k for k in new if "Deployment" in k[2])]
    assert "asks for 0 GPU(s) and is given 1" in new[next(k for k in new if "Cluster" in k[2])]


def test_a_max_without_a_default_refuses_a_container_without_a_limit():
    items = [limitranges.defaulted({"type": "Container", "max": {"cpu": "1"}, "default": {"memory": "1Gi"}})]
    assert items[0]["default"] == {"memory": "1Gi", "cpu": "1"}
    assert items[0]["defaultRequest"] == {"memory": "1Gi", "cpu": "1"}
    pod = {"containers": [{"name": "a", "resources": {"limits": {"cpu": "2"}}}]}
    limitranges.api_defaults(pod)
    limitranges.mutate(pod, items)
    assert limitranges.validate(pod, items) == ["a: maximum cpu usage per Container is 1"]


def test_pod_gpus_are_the_larger_of_containers_and_init_containers():
    def c(n: int) -> dict[str, Any]:
        return {"name": "x", "resources": {"limits": {"nvidia.com/gpu": n}}}

    assert limitranges.pod_gpus({"containers": [c(1), c(1)], "initContainers": [c(1)]}) == 2
    assert limitranges.pod_gpus({"containers": [c(0)], "initContainers": [c(2)]}) == 2
