"""Whether the pods of a stack reach every host port they serve through the host firewall the stack
manages.

A ``hostNetwork: true`` pod listens on the node's own addresses, so another pod (Prometheus
scraping node-exporter) reaches it through the host's INPUT chain, where UFW's ``default deny
incoming`` applies (gpu_constructs/scripts/firewall.sh). The k3s known issues ("Ufw", k3s-io/k3s#2059):
"UFW firewall rules are evaluated prior to the kube-proxy rules, so traffic to cluster services can
be blocked. Traffic from the service and pod networks should be allowed in ufw". The stack opens
``CLUSTER_PORTS`` (and ``PUBLIC_PORTS``) to the trusted networks: every containerPort of a
hostNetwork pod must be among them. Ports of pods on the pod network never cross INPUT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.render import RenderedStack

_TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


@dataclass(frozen=True)
class Finding:
    stack: str
    release: str
    pod: str  # Kind/namespace/name
    port: str  # NUMBER/proto

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.stack, self.release, self.pod, self.port)


def open_to_pods(synthesized: dict[str, Any]) -> list[set[str]] | None:
    """The ports each managed host firewall opens to the pod network; None without one."""
    found = []
    for step in (synthesized.get("resource", {}).get("terraform_data") or {}).values():
        triggers = step.get("triggers_replace") or {}
        if isinstance(triggers, dict) and "firewall.sh:CLUSTER_PORTS" in triggers:
            ports = f"{triggers['firewall.sh:CLUSTER_PORTS']} {triggers.get('firewall.sh:PUBLIC_PORTS', '')}"
            found.append(set(ports.split()))
    return found or None


def host_network_ports(obj: dict[str, Any]) -> list[str]:
    if obj.get("kind") == "Pod":
        spec = obj.get("spec") or {}
    elif obj.get("kind") in _TEMPLATE_KINDS:
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    else:
        return []
    if not spec.get("hostNetwork"):
        return []
    ports = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            number = port.get("hostPort", port["containerPort"])
            ports.append(f"{number}/{str(port.get('protocol', 'TCP')).lower()}")
    return ports


def findings(rendered: RenderedStack) -> list[Finding]:
    firewalls = open_to_pods(rendered.synthesized)
    if firewalls is None:
        return []
    found = []
    for release, obj in rendered.objects():
        meta = obj.get("metadata") or {}
        name = f"{obj.get('kind')}/{meta.get('namespace', release.namespace)}/{meta.get('name')}"
        for port in host_network_ports(obj):
            if any(port not in opened for opened in firewalls):
                found.append(Finding(rendered.stack, release.address, name, port))
    return found
