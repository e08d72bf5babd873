from __future__ import annotations

import pytest

from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost
from gpu_constructs.networking import Networking, NetworkingProps
from tests.conftest import by_kind, make_cluster, manifests_of, release_values, resources
from tests.validators import validate_manifest, validate_values

HOST = SshHost("192.168.1.100", "ubuntu", "~/.ssh/id_ed25519")


def props(**overrides) -> NetworkingProps:
    fields = {
        "cluster": make_cluster(),
        "acme_email": "ops@example.com",
        "domains": ("api.example.com", "vault.example.com"),
        "ingress_address": "192.168.1.100",
        "dns_zone": "example.com",
        "firewall_hosts": (HOST,),
        "trusted_cidrs": ("192.168.1.100/32", "10.42.0.0/16", "10.43.0.0/16"),
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


def test_firewall_opens_the_seed_ports_and_trusts_the_cluster_networks(synth):
    synthesized, _ = build(synth)
    (firewall,) = resources(synthesized, "terraform_data").values()
    command = next(p["remote-exec"]["inline"][0] for p in firewall["provisioner"] if "remote-exec" in p)
    assert "PUBLIC_PORTS='22/tcp 80/tcp 443/tcp 6443/tcp'" in command
    assert "TRUSTED_CIDRS='192.168.1.100/32 10.42.0.0/16 10.43.0.0/16'" in command
    assert "CLUSTER_PORTS='10250/tcp 8472/udp 2379/tcp 2380/tcp'" in command


def test_no_firewall_without_hosts(synth):
    synthesized, _ = build(synth, firewall_hosts=())
    assert resources(synthesized, "terraform_data") == {}


def test_dns_records_and_cloudflare_commands(synth):
    _, networking = build(synth)
    assert networking.dns_records[0] == {
        "type": "A",
        "name": "api.example.com",
        "content": "192.168.1.100",
        "ttl": "300",
    }
    assert networking.cloudflare_commands[1] == (
        "flarectl dns create --zone example.com --name vault.example.com --type A --content 192.168.1.100 --ttl 300"
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
        ({"public_ports": ("80/tcp",)}, r"'public_ports' is \('80/tcp',\): keep 22/tcp open"),
        ({"trusted_cidrs": ("10.42.0.1/16",)}, r"'trusted_cidrs' is '10.42.0.1/16': give an IPv4 network"),
        ({"ingress_replicas": 0}, r"'ingress_replicas' is 0"),
    ],
)
def test_bad_networking_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(**overrides)
