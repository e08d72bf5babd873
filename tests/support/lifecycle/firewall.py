"""Node firewalls: every port a pod serves on a node's own address is admitted between the nodes.

A pod with ``hostNetwork`` listens on the node's address, and one with a ``hostPort`` is reached
there; a scraper or client in another pod (Prometheus for node-exporter) reaches it from another
node. On LKE that traffic comes from the nodes' private range, 192.168.128.0/17 (a pod's traffic to
an address outside the Calico pool leaves with its node's address), and the node firewall's inbound
policy is DROP: only Linode's default rules (linode/cloud-firewall-controller v0.2.1
internal/rules/defaults.go: TCP 10250 and 10256, UDP 51820, DNS, BGP, Typha, IP-in-IP between the
nodes; NodePorts from the NodeBalancers) and the stack's own rules admit anything. A port no rule
admits from the node range is a target that is down on every node but the scraper's own.

The firewall's rules, per stack: the CloudFirewall the cloud-firewall-controller chart renders (its
``ruleset.inbound`` after the controller's defaults, cloudfirewall_controller.go
effectiveRulesetSpec) or the stack's ``linode_firewall`` (LKE Enterprise). A stack with neither has
no node firewall it defines, and nothing is checked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from gpu_constructs.compute.lke import LKE_DEFAULT_INBOUND, LKE_PRIVATE
from gpu_constructs.compute.lke.bindings import FirewallRule
from tests.support.render import RenderedStack


@dataclass(frozen=True)
class HostPort:
    where: str
    protocol: str
    port: int


def _rule(body: dict[str, Any]) -> FirewallRule:
    addresses = body.get("addresses", body)
    return FirewallRule(
        body["label"],
        body["action"],
        body["protocol"],
        body.get("ports"),
        ipv4=addresses.get("ipv4"),
        ipv6=addresses.get("ipv6"),
    )


def node_firewall(rendered: RenderedStack) -> list[FirewallRule] | None:
    """The inbound rules of the firewall in front of the stack's nodes, None when it defines none."""
    rules: list[FirewallRule] | None = None
    for _, obj in rendered.objects():
        if obj.get("kind") == "CloudFirewall" and obj["apiVersion"].startswith("networking.linode.com/"):
            inbound = ((obj.get("spec") or {}).get("ruleset") or {}).get("inbound") or []
            rules = [*(rules or LKE_DEFAULT_INBOUND), *(_rule(r) for r in inbound)]
    for firewall in rendered.synthesized.get("resource", {}).get("linode_firewall", {}).values():
        rules = [*(rules or []), *(_rule(r) for r in firewall.get("inbound") or [])]
    return rules


def host_ports(rendered: RenderedStack) -> list[HostPort]:
    """Every port a rendered pod serves on its node's address (hostNetwork ports, hostPorts)."""
    from tests.support.placement import pod_templates

    found = []
    for template in pod_templates(rendered):
        host_network = bool(template.spec.get("hostNetwork"))
        for container in template.spec.get("containers", []):
            for port in container.get("ports", []):
                number = port.get("hostPort") or (port.get("containerPort") if host_network else None)
                if number:
                    found.append(
                        HostPort(f"{template.where} {container['name']}", port.get("protocol", "TCP"), number)
                    )
    return found


def _ports(text: str | None) -> list[tuple[int, int]]:
    if text is None:
        return [(1, 65535)]
    spans = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        spans.append((int(low), int(high or low)))
    return spans


def admits(rules: list[FirewallRule], protocol: str, port: int, source: str = LKE_PRIVATE) -> bool:
    """Whether an ACCEPT rule admits ``protocol``/``port`` from all of ``source``, before any DROP."""
    network = ipaddress.ip_network(source)
    for rule in rules:
        if rule.protocol != protocol or not any(low <= port <= high for low, high in _ports(rule.ports)):
            continue
        ipv4 = [a for a in rule.ipv4 or [] if "${" not in a]
        if any(network.subnet_of(ipaddress.ip_network(a)) for a in ipv4):  # type: ignore[arg-type]
            return rule.action == "ACCEPT"
    return False


def findings(rendered: RenderedStack) -> list[str]:
    rules = node_firewall(rendered)
    if rules is None:
        return []
    return sorted(
        f"{p.where}: {p.protocol} {p.port} is not admitted from the node range {LKE_PRIVATE}"
        for p in host_ports(rendered)
        if not admits(rules, p.protocol, p.port)
    )


def load_balancer_findings(rendered: RenderedStack) -> list[str]:
    """On LKE with a node firewall: the stack renders a LoadBalancer Service for the UI it admits from
    ``ui_allowed_cidrs``, and every one carries the Linode CCM's firewall ACL with an IPv4 allowlist.
    A NodeBalancer reaches the nodes from 192.168.255.0/24 (Linode's NodePort rule), past the node
    firewall's UI rule, so only the ACL the CCM puts in front of the NodeBalancer restricts who
    reaches the Service (linode-cloud-controller-manager docs/configuration/annotations.md,
    firewall-acl). Zero such Services while the stack takes ``ui_allowed_cidrs``: the allowlist
    restricts nothing, which is a finding too."""
    import json

    from gpu_constructs.compute.lke import LB_FIREWALL_ACL

    if "linode_lke_cluster" not in rendered.synthesized.get("resource", {}):
        return []
    if node_firewall(rendered) is None:
        return []
    problems, seen = [], 0
    for release, obj in rendered.objects():
        if obj.get("kind") != "Service" or (obj.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        seen += 1
        acl = ((obj.get("metadata") or {}).get("annotations") or {}).get(LB_FIREWALL_ACL)
        try:
            allowed = json.loads(acl)["allowList"]["ipv4"] if acl else []
        except (ValueError, KeyError, TypeError):
            allowed = []
        if not allowed:
            problems.append(f"{release.address}: Service {obj['metadata']['name']} has no {LB_FIREWALL_ACL}")
    if not seen and "ui_allowed_cidrs" in rendered.synthesized.get("variable", {}):
        problems.append(
            "ui_allowed_cidrs is declared but no LoadBalancer Service is rendered: it restricts nothing"
        )
    return problems
