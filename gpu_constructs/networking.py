"""Networking: host firewall, DNS records, the ingress controller, cert-manager and its issuers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import ScriptRun, SshHost, run_scripts

PUBLIC_PORTS = ("22/tcp", "80/tcp", "443/tcp", "6443/tcp")
CLUSTER_PORTS = ("10250/tcp", "8472/udp", "2379/tcp", "2380/tcp")
"""kubelet, flannel VXLAN and embedded etcd: reachable only from the nodes, pods and services."""

INGRESS_NAMESPACE = "traefik"
INGRESS_CLASS = "traefik"
CERT_MANAGER_NAMESPACE = "cert-manager"

ACME_SERVERS = {
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "letsencrypt-production": "https://acme-v02.api.letsencrypt.org/directory",
}


@dataclass(frozen=True)
class NetworkingProps:
    """Settings of the cluster's edge."""

    cluster: GpuCluster
    acme_email: str
    """Contact address for Let's Encrypt; a variable reference or a literal address."""
    domains: Sequence[str] = ()
    """Host names that get A records pointing at ``ingress_address`` (variable references allowed)."""
    ingress_address: str = ""
    """The address the A records point at: the host that receives ports 80 and 443."""
    dns_zone: str = ""
    """The Cloudflare zone of the records, for the generated ``flarectl`` commands."""
    firewall_hosts: Sequence[SshHost] = ()
    """Hosts whose UFW firewall is managed; empty leaves host firewalls alone (cloud platforms)."""
    trusted_cidrs: Sequence[str] = ()
    """Networks allowed to reach the cluster-internal ports (nodes, pod and service CIDRs)."""
    public_ports: Sequence[str] = PUBLIC_PORTS
    """Ports open to everyone on the managed hosts."""
    ingress_replicas: int = 1
    cert_manager_version: str = versions.CERT_MANAGER.version
    traefik_chart_version: str = versions.TRAEFIK_CHART.version

    def __post_init__(self) -> None:
        for port in self.public_ports:
            if not (port.partition("/")[0].isdigit() and port.partition("/")[2] in ("tcp", "udp")):
                raise ConfigError("public_ports", port, "write each port as NUMBER/tcp or NUMBER/udp")
        if self.firewall_hosts and "22/tcp" not in self.public_ports:
            raise ConfigError(
                "public_ports",
                tuple(self.public_ports),
                "keep 22/tcp open on firewalled hosts, or Terraform loses its SSH access",
            )
        for network in self.trusted_cidrs:
            if not validate.is_reference(network):
                validate.cidr("trusted_cidrs", network)
        validate.int_range("ingress_replicas", self.ingress_replicas, 1, 10)


class Networking(Construct):
    """Firewall, DNS records, Traefik ingress, cert-manager with Let's Encrypt issuers."""

    ingress_class = INGRESS_CLASS
    ingress_namespace = INGRESS_NAMESPACE

    def __init__(self, scope: Construct, id: str, *, props: NetworkingProps) -> None:
        super().__init__(scope, id)
        self.props = props
        cluster = props.cluster

        self.firewalls = [
            run_scripts(
                self,
                f"firewall-{index}",
                host=host,
                runs=[
                    ScriptRun(
                        "firewall.sh",
                        {
                            "PUBLIC_PORTS": " ".join(props.public_ports),
                            "CLUSTER_PORTS": " ".join(CLUSTER_PORTS),
                            "TRUSTED_CIDRS": " ".join(props.trusted_cidrs),
                        },
                    )
                ],
            )
            for index, host in enumerate(props.firewall_hosts)
        ]

        self.ingress = helm.release(
            self,
            "traefik",
            name="traefik",
            chart="traefik",
            repository=versions.REPO_TRAEFIK,
            version=props.traefik_chart_version,
            namespace=INGRESS_NAMESPACE,
            values={
                "deployment": {"replicas": props.ingress_replicas},
                "ingressClass": {"enabled": True, "isDefaultClass": True, "name": INGRESS_CLASS},
                # Chart 39 reads the redirect under ports.<name>.http.redirections (values.yaml).
                "ports": {
                    "web": {"http": {"redirections": {"entryPoint": {"to": "websecure", "scheme": "https"}}}}
                },
                "service": {"type": "LoadBalancer"},
            },
            depends_on=cluster.ready,
        )

        self.cert_manager = helm.release(
            self,
            "cert-manager",
            name="cert-manager",
            chart="cert-manager",
            repository=versions.REPO_JETSTACK,
            version=props.cert_manager_version,
            namespace=CERT_MANAGER_NAMESPACE,
            values={"crds": {"enabled": True, "keep": True}, "prometheus": {"enabled": False}},
            depends_on=cluster.ready,
        )

        self.issuers = helm.manifests_release(
            self,
            "cluster-issuers",
            name="cluster-issuers",
            namespace=CERT_MANAGER_NAMESPACE,
            manifests=self.cluster_issuers(),
            depends_on=[self.cert_manager, self.ingress],
        )

    def cluster_issuers(self) -> list[dict]:
        """One ACME ClusterIssuer per Let's Encrypt environment, solving HTTP-01 through the ingress."""
        return [
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "ClusterIssuer",
                "metadata": {"name": name},
                "spec": {
                    "acme": {
                        "email": self.props.acme_email,
                        "server": server,
                        "privateKeySecretRef": {"name": f"{name}-account-key"},
                        "solvers": [{"http01": {"ingress": {"ingressClassName": INGRESS_CLASS}}}],
                    }
                },
            }
            for name, server in ACME_SERVERS.items()
        ]

    @property
    def dns_records(self) -> list[dict[str, str]]:
        """The A records to create: one per domain, pointing at the ingress address."""
        return [
            {"type": "A", "name": domain, "content": self.props.ingress_address, "ttl": "300"}
            for domain in self.props.domains
        ]

    @property
    def cloudflare_commands(self) -> list[str]:
        """``flarectl`` commands that create the A records in Cloudflare."""
        return [
            f"flarectl dns create --zone {self.props.dns_zone} --name {record['name']} "
            f"--type A --content {record['content']} --ttl {record['ttl']}"
            for record in self.dns_records
        ]
