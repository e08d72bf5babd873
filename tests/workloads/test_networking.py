from __future__ import annotations

import pytest

from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost
from gpu_constructs.networking import Networking, NetworkingProps
from tests.conftest import by_kind, make_cluster, manifests_of, release_values, resources
from tests.support.validators import validate_manifest, validate_values

HOST = SshHost("192.168.1.100", "ubuntu", "~/.ssh/id_ed25519")


def props(**overrides) -> NetworkingProps:
    fields = {
        "cluster": make_cluster(),
        "acme_email": "ops@example.com",
        "domains": ("api.example.com", "vault.example.com"),
        "ingress_address": "192.168.1.100",
        "public_address": "203.0.113.10",
        "dns_zone": "example.com",
        "firewall_hosts": (HOST,),
        "trusted_cidrs": ("192.168.1.100/32", "10.42.0.0/16", "10.43.0.0/16"),
        "admin_cidrs": ("192.168.1.0/24",),
    }
    fields.update(overrides)
    return NetworkingProps(**fields)


def build(synth, **overrides):
    made = {}
    synthesized = synth(
        lambda stack: made.setdefault("n", Networking(stack, "networking", props=props(**overrides)))
    )
    return synthesized, made["n"]


def release(synthesized, name):
    (found,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == name]
    return found


def test_firewall_opens_web_ports_to_all_admin_ports_to_admins_and_trusts_the_cluster(synth):
    synthesized, _ = build(synth)
    (firewall,) = resources(synthesized, "terraform_data").values()
    command = [p["remote-exec"]["inline"][-1] for p in firewall["provisioner"] if "remote-exec" in p][-1]
    assert "PUBLIC_PORTS='80/tcp 443/tcp'" in command
    assert "ADMIN_PORTS='22/tcp 6443/tcp'" in command and "ADMIN_CIDRS='192.168.1.0/24'" in command
    assert "TRUSTED_CIDRS='192.168.1.100/32 10.42.0.0/16 10.43.0.0/16'" in command
    # Agents join the API server, pods reach it through the kubernetes Service.
    assert "CLUSTER_PORTS='6443/tcp 10250/tcp 8472/udp 2379/tcp 2380/tcp'" in command


DNS01 = {
    "acme_solver": "dns01-cloudflare",
    "cloudflare_api_token": "${var.cloudflare_api_token}",
    "secret_host": HOST,
}


def test_dns01_through_cloudflare_for_a_private_address(synth, upstream):
    synthesized, networking = build(synth, **DNS01)
    issuers = by_kind(manifests_of(release(synthesized, "cluster-issuers")), "ClusterIssuer")
    for issuer in issuers:
        assert issuer["spec"]["acme"]["solvers"] == [
            {
                "dns01": {
                    "cloudflare": {"apiTokenSecretRef": {"name": "cloudflare-api-token", "key": "api-token"}}
                },
                "selector": {"dnsZones": ["example.com"]},
            }
        ]
        validate_manifest(issuer, upstream)
    (step,) = [v for k, v in resources(synthesized, "terraform_data").items() if "cloudflare-secret" in k]
    # The token is uploaded as a private file, hashed in the triggers, and never on a command line.
    uploads = [p["file"] for p in step["provisioner"] if "file" in p]
    assert {
        "content": "CLOUDFLARE_API_TOKEN=${var.cloudflare_api_token}\n",
        "destination": ".gpu-constructs/cloudflare-secret.sh.env",
    } in uploads
    commands = [c for p in step["provisioner"] if "remote-exec" in p for c in p["remote-exec"]["inline"]]
    assert not [c for c in commands if "cloudflare_api_token" in c]
    assert "sha256(" in step["triggers_replace"]["token_sha256"]  # the stack test checks the expression
    issuers_release = release(synthesized, "cluster-issuers")
    assert any("cloudflare-secret" in dep for dep in issuers_release["depends_on"])
    assert networking.dns01_secret is not None


def test_records_point_at_the_public_address_when_given(synth):
    _, networking = build(synth, public_address="203.0.113.10")
    assert {r["content"] for r in networking.dns_records} == {"203.0.113.10"}


def test_no_firewall_without_hosts(synth):
    synthesized, _ = build(synth, firewall_hosts=())
    assert resources(synthesized, "terraform_data") == {}


def test_dns_records_and_cloudflare_commands(synth):
    _, networking = build(synth)
    assert networking.dns_records[0] == {
        "type": "A",
        "name": "api.example.com",
        "content": "203.0.113.10",
        "ttl": "300",
    }
    assert networking.cloudflare_commands[1] == (
        "flarectl dns create --zone example.com --name vault.example.com --type A --content 203.0.113.10 --ttl 300"
    )


def test_cert_manager_and_traefik_are_pinned_and_wait_for_the_cluster(synth):
    synthesized, _ = build(synth)
    cert_manager = release(synthesized, "cert-manager")
    assert (cert_manager["version"], cert_manager["repository"]) == ("v1.21.1", "https://charts.jetstack.io")
    assert release_values(cert_manager)["crds"] == {"enabled": True, "keep": True}
    traefik = release(synthesized, "traefik")
    assert traefik["version"] == "39.0.3"
    assert release_values(traefik)["ingressClass"]["name"] == "traefik"


def test_issuers_for_staging_and_production_after_cert_manager(synth, upstream):
    synthesized, _ = build(synth)
    issuers_release = release(synthesized, "cluster-issuers")
    issuers = by_kind(manifests_of(issuers_release), "ClusterIssuer")
    assert [i["metadata"]["name"] for i in issuers] == ["letsencrypt-staging", "letsencrypt-production"]
    assert issuers[0]["spec"]["acme"]["server"].startswith("https://acme-staging-v02")
    assert issuers[1]["spec"]["acme"]["solvers"] == [{"http01": {"ingress": {"ingressClassName": "traefik"}}}]
    assert any("cert-manager" in dep for dep in issuers_release["depends_on"])
    for issuer in issuers:
        assert validate_manifest(issuer, upstream) == "cert-manager/cert-manager.io_clusterissuers.yaml"


def test_cert_manager_values_match_the_chart_schema(synth, upstream):
    synthesized, _ = build(synth)
    validate_values(
        release_values(release(synthesized, "cert-manager")), upstream / "cert-manager/values.schema.json"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"public_ports": ("22/tcp", "https")}, r"'public_ports' is 'https': write each port as NUMBER/tcp"),
        ({"admin_cidrs": ()}, r"'public_ports' is \('80/tcp', '443/tcp'\): keep 22/tcp open"),
        ({"admin_cidrs": ("0.0.0.0/33",)}, r"'admin_cidrs' is '0.0.0.0/33': give an IPv4 network"),
        ({"admin_ports": ("99999/tcp",)}, r"'admin_ports' is '99999/tcp': write each port"),
        (
            {"public_address": "192.168.1.100"},
            r"'public_address' is '192.168.1.100': Let's Encrypt cannot reach a private address over HTTP-01",
        ),
        ({"public_address": "10.0.0.5", "ingress_address": "10.0.0.5"}, r"'public_address' is '10.0.0.5'"),
        # no public address: the records point at the private ingress host itself
        ({"public_address": None}, r"'public_address' is '192.168.1.100': Let's Encrypt cannot reach"),
        ({"acme_solver": "tls-alpn"}, r"'acme_solver' is 'tls-alpn': use one of http01, dns01-cloudflare"),
        (
            {**DNS01, "cloudflare_api_token": "abc"},
            r"'cloudflare_api_token' is '<literal>': DNS-01 through Cloudflare needs a reference",
        ),
        ({**DNS01, "secret_host": None}, r"'secret_host' is None: DNS-01 through Cloudflare needs"),
        ({"trusted_cidrs": ("10.42.0.1/16",)}, r"'trusted_cidrs' is '10.42.0.1/16': give an IPv4 network"),
        ({"ingress_replicas": 0}, r"'ingress_replicas' is 0"),
    ],
)
def test_bad_networking_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(**overrides)


def test_a_public_address_passes_http01():
    assert props(public_address="203.0.113.10").acme_solver == "http01"


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "172.32.0.1",
        "192.168.1.100",
        "100.64.0.1",
        "100.128.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "203.0.113.10",
        "8.8.8.8",
        "11.0.0.1",
    ],
)
def test_the_terraform_check_and_the_synth_check_agree_on_private_addresses(address):
    import re

    from gpu_constructs.networking import PRIVATE_ADDRESS_REGEX, is_private

    assert bool(re.match(PRIVATE_ADDRESS_REGEX, address)) == is_private(address)


def test_several_ingress_replicas_spread_over_the_nodes_and_drain_one_at_a_time(helm, upstream):
    """proxmox-ha runs one Traefik per server: rendered by Helm from the chart, a PodDisruptionBudget
    lets a drain take one at a time and the pods prefer different nodes; one replica has neither."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    objects = [o for r, o in render.rendered(instance).objects() if r.chart == "traefik"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (
        spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"
    )
    assert (
        spread["labelSelector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (budget,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    single = release_values(release(_single_node_stack(), "traefik"))
    assert "podDisruptionBudget" not in single and "topologySpreadConstraints" not in single


def _single_node_stack():
    import json

    import cdktf

    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    return json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
