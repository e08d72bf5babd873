"""Gate for the UFW host firewall on k3s hosts (cloud node firewalls: tests/lifecycle/test_firewall.py):
every port a hostNetwork pod serves is open to the pod network in each host firewall the stack manages (model and upstream references in tests/support/lifecycle/host_firewall.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.support.lifecycle import host_firewall as firewall

# (stack, release, pod, port) -> issue that fixes it
KNOWN: dict[tuple[str, str, str, str], int] = {}


def unexpected(rendered: Any) -> tuple[set[tuple[str, str, str, str]], list[tuple[str, str, str, str]]]:
    found = {finding.key for finding in firewall.findings(rendered)}
    new = {key for key in found if key not in KNOWN}
    gone = [key for key in KNOWN if key[0] == rendered.stack and key not in found]
    return new, gone


def test_host_network_ports_are_open_to_the_pods(rendered_stack):
    new, gone = unexpected(rendered_stack)
    assert new == set(), f"{rendered_stack.stack}: hostNetwork ports the host firewall drops"
    assert gone == [], f"{rendered_stack.stack}: fixed, remove from KNOWN in {__file__}"


def test_the_gate_sees_node_exporter_behind_the_single_node_firewall(helm, upstream):
    """Not vacuous: node-exporter is a hostNetwork pod on 9100; without 9100 among the ports the
    firewall opens to the pods, the gate names it."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    rendered = copy.deepcopy(render.rendered(instance))
    ports = [p for _, obj in rendered.objects() for p in firewall.host_network_ports(obj)]
    assert "9100/tcp" in ports
    for step in rendered.synthesized["resource"]["terraform_data"].values():
        triggers = step.get("triggers_replace") or {}
        if isinstance(triggers, dict) and "firewall.sh:CLUSTER_PORTS" in triggers:
            triggers["firewall.sh:CLUSTER_PORTS"] = triggers["firewall.sh:CLUSTER_PORTS"].replace(
                "9100/tcp", ""
            )
    new, _ = unexpected(rendered)
    assert {(pod, port) for (_, _, pod, port) in new} >= {
        ("DaemonSet/monitoring/kube-prometheus-stack-prometheus-node-exporter", "9100/tcp")
    }
