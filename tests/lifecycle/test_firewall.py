"""Gate: a node firewall the stack defines admits, between the nodes, every port a pod serves on a
node's own address (model and references in tests/support/lifecycle/firewall.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import cdktf

from gpu_constructs import versions
from tests.support.lifecycle import firewall


def test_every_host_port_is_admitted_between_the_nodes(rendered_stack):
    assert firewall.findings(rendered_stack) == []


def _rendered_lke(**overrides: Any) -> Any:
    from environments import Instance
    from tests.support import render

    if not overrides:
        import main

        (instance,) = [i for i in main.INSTANCES if i.stack == "lke"]
        return copy.deepcopy(render.rendered(instance))
    instance = Instance("lke-variant", "lke", overrides)
    synthesized = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    helm = render.helm_binary()
    assert helm is not None
    # Enterprise's full version (v1.34.1+lke1) is not the minor the renderer looks for.
    return render.render_stack("lke-variant", synthesized, versions.LKE_KUBERNETES.version, helm)


def test_the_gate_sees_node_exporter_and_the_firewall(helm, upstream):
    """Not vacuous: lke's node-exporter serves 9100 on the node; without its rule the gate fails."""
    rendered = _rendered_lke()
    assert any(p.port == 9100 and "node-exporter" in p.where for p in firewall.host_ports(rendered))
    for _, obj in rendered.objects():
        if obj.get("kind") == "CloudFirewall":
            inbound = obj["spec"]["ruleset"]["inbound"]
            obj["spec"]["ruleset"]["inbound"] = [r for r in inbound if "9100" not in r.get("ports", "")]
    assert any("TCP 9100 is not admitted" in f for f in firewall.findings(rendered))


def test_the_enterprise_firewall_admits_node_exporter(helm, upstream):
    rendered = _rendered_lke(tier="enterprise", k8s_version="v1.34.1+lke1")
    assert not [o for _, o in rendered.objects() if o.get("kind") == "CloudFirewall"]
    assert firewall.node_firewall(rendered)
    assert firewall.findings(rendered) == []


def test_stacks_without_a_node_firewall_are_not_checked(helm, upstream):
    """firewall=False: no firewall, nothing to admit."""
    rendered = _rendered_lke(firewall=False)
    assert firewall.node_firewall(rendered) is None and firewall.findings(rendered) == []


def test_every_load_balancer_service_admits_only_the_ui_allowlist(rendered_stack):
    assert firewall.load_balancer_findings(rendered_stack) == []


def test_the_load_balancer_gate_is_not_vacuous(helm, upstream):
    """lke's Traefik Service carries the ACL from ui_allowed_cidrs; without it, or with no
    LoadBalancer Service at all, the gate fails."""
    rendered = _rendered_lke()
    services = [
        (r.name, o)
        for r, o in rendered.objects()
        if o.get("kind") == "Service" and o["spec"].get("type") == "LoadBalancer"
    ]
    assert [name for name, _ in services] == ["traefik"]
    (_, service) = services[0]
    acl = service["metadata"]["annotations"]["service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"]
    assert json.loads(acl) == {"allowList": {"ipv4": ["192.0.2.0/24"]}}
    del service["metadata"]["annotations"]
    assert [f.split(": ", 1)[1] for f in firewall.load_balancer_findings(rendered)] == [
        "Service traefik has no service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"
    ]
    service["spec"]["type"] = "ClusterIP"
    assert firewall.load_balancer_findings(rendered) == [
        "ui_allowed_cidrs is declared but no LoadBalancer Service is rendered: it restricts nothing"
    ]
