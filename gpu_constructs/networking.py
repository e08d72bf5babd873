"""Networking: host firewall, DNS records, the ingress controller, cert-manager and its issuers."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdktf import Fn
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import ScriptRun, SshHost, run_scripts
from gpu_constructs.monitoring import NAMESPACE as MONITORING_NAMESPACE

PUBLIC_PORTS = ("80/tcp", "443/tcp")
"""HTTP and HTTPS for the ingress: open to everyone."""
ADMIN_PORTS = ("22/tcp", "6443/tcp")
"""SSH and the Kubernetes API: open to ``admin_cidrs`` only."""
CLUSTER_PORTS = ("6443/tcp", "10250/tcp", "8472/udp", "2379/tcp", "2380/tcp")
"""The API server (agents join it, pods reach it through the kubernetes Service), kubelet, flannel
VXLAN and embedded etcd: reachable only from the nodes, pods and services."""

ACME_SOLVERS = ("http01", "dns01-cloudflare")
CLOUDFLARE_SECRET = "cloudflare-api-token"
CLOUDFLARE_SECRET_KEY = "api-token"
# RFC 1918, loopback, link-local and carrier-grade NAT: Let's Encrypt cannot reach these over HTTP-01.
_UNREACHABLE = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
    )
)
PRIVATE_ADDRESS_REGEX = (
    r"^(10[.]|192[.]168[.]|172[.](1[6-9]|2[0-9]|3[01])[.]|127[.]|169[.]254[.]"
    r"|100[.](6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])[.])"
)
"""The same networks as a regular expression, for Terraform validations of address variables."""


def is_private(address: str) -> bool:
    """Whether Let's Encrypt's HTTP-01 validation cannot reach ``address`` from the internet."""
    ip = ipaddress.IPv4Address(address)
    return any(ip in network for network in _UNREACHABLE)


INGRESS_NAMESPACE = "traefik"
INGRESS_CLASS = "traefik"
TRAEFIK_PROVIDERS = {"kubernetesCRD": {"enabled": False}, "kubernetesIngress": {"enabled": True}}
"""Traefik serves Ingress objects only. Its IngressRoute provider (kubernetesCRD, on by default in
chart 39) would watch the traefik.io kinds of the chart's crds/, which Helm installs once and never
upgrades: off, nothing reads them, and a Traefik upgrade cannot leave it watching kinds the cluster
does not serve. The Gateway provider is off by default."""
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
    """The host that receives ports 80 and 443."""
    public_address: str | None = None
    """The address the A records point at, where it differs from ``ingress_address`` (a router that
    forwards 80 and 443 to a private ingress address). None: ``ingress_address``."""
    acme_solver: str = "http01"
    """How Let's Encrypt validates a domain. ``http01`` through the ingress, which needs the record
    address reachable from the internet; ``dns01-cloudflare`` through a TXT record in the Cloudflare
    zone ``dns_zone``, which works for private addresses too."""
    cloudflare_api_token: str | None = None
    """With ``dns01-cloudflare``: a reference to a sensitive variable holding a Cloudflare API token
    with Zone:DNS:Edit on ``dns_zone``, never a literal."""
    secret_host: SshHost | None = None
    """With ``dns01-cloudflare``: the k3s server that writes the token into the Secret cert-manager
    reads, from a private file (the token stays out of the synthesized JSON, the Terraform state and
    every command line)."""
    dns_zone: str = ""
    """The Cloudflare zone of the records, for the generated ``flarectl`` commands."""
    firewall_hosts: Sequence[SshHost] = ()
    """Hosts whose UFW firewall is managed; empty leaves host firewalls alone (cloud platforms)."""
    trusted_cidrs: Sequence[str] = ()
    """Networks allowed to reach the cluster-internal ports (nodes, pod and service CIDRs)."""
    pod_host_ports: Sequence[str] = ()
    """Ports the stack's ``hostNetwork`` pods serve to other pods (node-exporter's, from
    ``Monitoring``'s ``HOST_NETWORK_PORTS``), opened to ``trusted_cidrs`` with ``CLUSTER_PORTS``:
    a pod reaches a host address through the host's INPUT chain, where UFW denies by default (k3s
    known issues, "Ufw": "Traffic from the service and pod networks should be allowed in ufw")."""
    public_ports: Sequence[str] = PUBLIC_PORTS
    """Ports open to everyone on the managed hosts."""
    admin_ports: Sequence[str] = ADMIN_PORTS
    """Ports open to ``admin_cidrs`` only on the managed hosts."""
    admin_cidrs: Sequence[str] = ()
    """Networks that reach the admin ports (variable references allowed, one may be a space-separated
    list). Must include the machine that runs Terraform: it connects over SSH and to the API."""
    ingress_replicas: int = 1
    service_monitor: bool = False
    """cert-manager's metrics Services, and :attr:`Networking.service_monitor` for them: a
    ServiceMonitor for the monitoring construct to ship (``MonitoringProps.service_monitors``) after
    the Prometheus Operator's CRDs. The chart's own ServiceMonitor would put cert-manager after the
    monitoring release, which comes after the ClusterIssuers (Grafana's ingress), which come after
    cert-manager: a cycle Terraform refuses at plan."""
    cert_manager_version: str = versions.CERT_MANAGER.version
    traefik_chart_version: str = versions.TRAEFIK_CHART.version

    def __post_init__(self) -> None:
        for name, ports in (
            ("public_ports", self.public_ports),
            ("admin_ports", self.admin_ports),
            ("pod_host_ports", self.pod_host_ports),
        ):
            for port in ports:
                number, _, proto = port.partition("/")
                if not (number.isdigit() and 1 <= int(number) <= 65535 and proto in ("tcp", "udp")):
                    raise ConfigError(name, port, "write each port as NUMBER/tcp or NUMBER/udp")
        ssh_open = "22/tcp" in self.public_ports or ("22/tcp" in self.admin_ports and self.admin_cidrs)
        if self.firewall_hosts and not ssh_open:
            raise ConfigError(
                "public_ports",
                tuple(self.public_ports),
                "keep 22/tcp open on firewalled hosts (admin_ports with admin_cidrs), or Terraform "
                "loses its SSH access",
            )
        for name, networks in (("trusted_cidrs", self.trusted_cidrs), ("admin_cidrs", self.admin_cidrs)):
            for network in networks:
                if not validate.is_reference(network):
                    validate.cidr(name, network)
        validate.one_of("acme_solver", self.acme_solver, ACME_SOLVERS)
        record = self.public_address or self.ingress_address
        if record and not validate.is_reference(record):
            validate.ipv4("public_address", record)
            if self.acme_solver == "http01" and is_private(record):
                raise ConfigError(
                    "public_address",
                    record,
                    "Let's Encrypt cannot reach a private address over HTTP-01; use "
                    "acme_solver='dns01-cloudflare' or a public address that forwards 80 and 443",
                )
        if self.acme_solver == "dns01-cloudflare":
            if self.cloudflare_api_token is None or not validate.is_reference(self.cloudflare_api_token):
                raise ConfigError(
                    "cloudflare_api_token",
                    "<literal>" if self.cloudflare_api_token else None,
                    "DNS-01 through Cloudflare needs a reference to a sensitive Terraform variable",
                )
            if self.secret_host is None:
                raise ConfigError(
                    "secret_host", None, "DNS-01 through Cloudflare needs the server that writes the token"
                )
            if not self.dns_zone:
                raise ConfigError("dns_zone", self.dns_zone, "DNS-01 through Cloudflare needs the zone")
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
                            "ADMIN_PORTS": " ".join(props.admin_ports),
                            "ADMIN_CIDRS": " ".join(props.admin_cidrs),
                            "CLUSTER_PORTS": " ".join(dict.fromkeys([*CLUSTER_PORTS, *props.pod_host_ports])),
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
            cluster=cluster,
            name="traefik",
            chart="traefik",
            repository=versions.REPO_TRAEFIK,
            version=props.traefik_chart_version,
            namespace=INGRESS_NAMESPACE,
            values={
                "deployment": {"replicas": props.ingress_replicas},
                "providers": TRAEFIK_PROVIDERS,
                "ingressClass": {"enabled": True, "isDefaultClass": True, "name": INGRESS_CLASS},
                # Chart 39 reads the redirect under ports.<name>.http.redirections (values.yaml).
                "ports": {
                    "web": {"http": {"redirections": {"entryPoint": {"to": "websecure", "scheme": "https"}}}}
                },
                "service": {"type": "LoadBalancer"},
                **(self._spread(props.ingress_replicas) if props.ingress_replicas > 1 else {}),
            },
        )

        self.cert_manager = helm.release(
            self,
            "cert-manager",
            cluster=cluster,
            name="cert-manager",
            chart="cert-manager",
            repository=versions.REPO_JETSTACK,
            version=props.cert_manager_version,
            namespace=CERT_MANAGER_NAMESPACE,
            # prometheus.enabled renders the metrics Services (templates/service.yaml); the
            # ServiceMonitor is this construct's service_monitor, not the chart's.
            values={
                "crds": {"enabled": True, "keep": True},
                "prometheus": (
                    {"enabled": True, "servicemonitor": {"enabled": False}}
                    if props.service_monitor
                    else {"enabled": False}
                ),
            },
        )
        self.service_monitor = self._service_monitor(MONITORING_NAMESPACE) if props.service_monitor else None

        issuers_after: list = [self.cert_manager, self.ingress]
        self.dns01_secret = None
        if props.acme_solver == "dns01-cloudflare":
            assert props.secret_host is not None and props.cloudflare_api_token is not None
            self.dns01_secret = run_scripts(
                self,
                "cloudflare-secret",
                host=props.secret_host,
                runs=[
                    ScriptRun(
                        "cloudflare-secret.sh",
                        {
                            "NAMESPACE": CERT_MANAGER_NAMESPACE,
                            "SECRET_NAME": CLOUDFLARE_SECRET,
                            "SECRET_KEY": CLOUDFLARE_SECRET_KEY,
                        },
                        secret_env={"CLOUDFLARE_API_TOKEN": props.cloudflare_api_token},
                    )
                ],
                # A new token re-runs the step; only its hash is kept in the state.
                extra_triggers={"token_sha256": Fn.sha256(props.cloudflare_api_token)},
                cluster=cluster,
                depends_on=[self.cert_manager],
            )
            issuers_after.append(self.dns01_secret)
        self.issuers = helm.manifests_release(
            self,
            "cluster-issuers",
            cluster=cluster,
            name="cluster-issuers",
            namespace=CERT_MANAGER_NAMESPACE,
            manifests=self.cluster_issuers(),
            depends_on=issuers_after,
        )

    def solvers(self) -> list[dict]:
        """HTTP-01 through the ingress, or DNS-01 through Cloudflare (cert-manager's cloudflare solver
        with an API token: https://cert-manager.io/docs/configuration/acme/dns01/cloudflare/)."""
        if self.props.acme_solver == "dns01-cloudflare":
            return [
                {
                    "dns01": {
                        "cloudflare": {
                            "apiTokenSecretRef": {"name": CLOUDFLARE_SECRET, "key": CLOUDFLARE_SECRET_KEY}
                        }
                    },
                    "selector": {"dnsZones": [self.props.dns_zone]},
                }
            ]
        return [{"http01": {"ingress": {"ingressClassName": INGRESS_CLASS}}}]

    def cluster_issuers(self) -> list[dict]:
        """One ACME ClusterIssuer per Let's Encrypt environment."""
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
                        "solvers": self.solvers(),
                    }
                },
            }
            for name, server in ACME_SERVERS.items()
        ]

    @property
    def dns_records(self) -> list[dict[str, str]]:
        """The A records to create: one per domain, pointing at the public address."""
        address = self.props.public_address or self.props.ingress_address
        return [
            {"type": "A", "name": domain, "content": address, "ttl": "300"} for domain in self.props.domains
        ]

    @property
    def cloudflare_commands(self) -> list[str]:
        """``flarectl`` commands that create the A records in Cloudflare."""
        return [
            f"flarectl dns create --zone {self.props.dns_zone} --name {record['name']} "
            f"--type A --content {record['content']} --ttl {record['ttl']}"
            for record in self.dns_records
        ]

    @staticmethod
    def _spread(replicas: int) -> dict[str, Any]:
        """Several ingress replicas are worth having only on different nodes and not all drained at
        once: a PodDisruptionBudget that keeps all but one, and a spread over the nodes. Preferred,
        not required: the spread counts nodes the pods cannot run on too (nodeTaintsPolicy Ignore,
        the default), so a required spread could leave a replica Pending while a server is drained."""
        return {
            "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
            "topologySpreadConstraints": [
                {
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
        }

    def _service_monitor(self, namespace: str) -> dict[str, Any]:
        """The ServiceMonitor cert-manager v1.21.1's chart renders (templates/servicemonitor.yaml with
        prometheus.servicemonitor.namespace set, its default interval and timeout), in ``namespace``:
        the series of the CertificateExpiringSoon alert
        (certmanager_certificate_expiration_timestamp_seconds)."""
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "cert-manager", "namespace": namespace},
            "spec": {
                "jobLabel": "app.kubernetes.io/name",
                "selector": {
                    "matchExpressions": [
                        {
                            "key": "app.kubernetes.io/name",
                            "operator": "In",
                            "values": ["cainjector", "cert-manager", "webhook"],
                        },
                        {"key": "app.kubernetes.io/instance", "operator": "In", "values": ["cert-manager"]},
                        {
                            "key": "app.kubernetes.io/component",
                            "operator": "In",
                            "values": ["cainjector", "controller", "webhook"],
                        },
                    ]
                },
                "namespaceSelector": {"matchNames": [CERT_MANAGER_NAMESPACE]},
                "endpoints": [
                    {
                        "targetPort": "http-metrics",
                        "path": "/metrics",
                        "interval": "60s",
                        "scrapeTimeout": "30s",
                        "honorLabels": False,
                    }
                ],
            },
        }
