"""Helpers for stack-level Terraform variables, shared by the environments."""

from __future__ import annotations

from collections.abc import Sequence

from cdktf import TerraformVariable, TerraformVariableValidationConfig
from constructs import Construct

from gpu_constructs.networking import PRIVATE_ADDRESS_REGEX


def rule(condition: str, error_message: str) -> TerraformVariableValidationConfig:
    """A variable validation. In Terraform's JSON syntax a bare string is a literal template, so the
    condition is wrapped in ``${...}`` to be evaluated as an expression."""
    return TerraformVariableValidationConfig(condition=f"${{{condition}}}", error_message=error_message)


DNS_NAME_REGEX = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?[.])+[a-z]{2,}$"
"""A lower-case DNS name with at least two labels, such as api.example.com."""

UNVALIDATED: dict[str, str] = {
    "ssh_private_key_path": (
        "a path on the machine that runs Terraform: fileexists() in a validation would fail every "
        "plan made where the key is not (a CI plan); a missing key fails the first SSH connection "
        "with its path"
    ),
    "proxmox_insecure": "a bool: Terraform's type check refuses anything else",
}
"""The variables without a validation, and why: a test checks every variable of every stack has
one or is here."""


def dns_name_rule(name: str, example: str) -> TerraformVariableValidationConfig:
    return rule(
        f'can(regex("{DNS_NAME_REGEX}", var.{name}))',
        f"{name} must be a lower-case DNS name such as {example}.",
    )


def in_zone_rule(names: Sequence[str], zone: str = "dns_zone") -> TerraformVariableValidationConfig:
    """Every one of the variables ``names`` is the zone or a name under it (a validation of the zone's
    variable that reads the others: Terraform 1.9+)."""
    listed = ", ".join(f"var.{name}" for name in names)
    return rule(
        f'alltrue([for n in [{listed}] : n == var.{zone} || endswith(n, ".${{var.{zone}}}")])',
        f"{' and '.join(names)} must lie in {zone} (api.example.com in example.com): the DNS records "
        "and Let's Encrypt's DNS-01 answers go into that zone.",
    )


def no_space_rule(name: str, what: str) -> TerraformVariableValidationConfig:
    return rule(
        f'can(regex("^[^[:space:]]+$", var.{name}))',
        f"{name} must be {what}, without spaces or line breaks.",
    )


def pinned_image_rule(name: str) -> TerraformVariableValidationConfig:
    """The variable ``name`` holds an image reference with a pinned tag or digest, never ``latest``."""
    return rule(
        f'can(regex("^[^:@ ]+(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[a-f0-9]{{64}})$", var.{name})) '
        f'&& !endswith(var.{name}, ":latest")',
        f"{name} must carry a pinned tag or digest, never :latest.",
    )


def k3s_token_variable(scope: Construct) -> TerraformVariable:
    """The sensitive shared k3s cluster secret."""
    return TerraformVariable(
        scope,
        "k3s_token",
        type="string",
        sensitive=True,
        description="Shared k3s cluster secret (generate with: openssl rand -hex 32).",
        validation=[
            rule(
                'can(regex("^[A-Za-z0-9]{32,}$", var.k3s_token))',
                "k3s_token must be at least 32 letters or digits (openssl rand -hex 32).",
            )
        ],
    )


def kubeconfig_path(stack: str) -> str:
    """Where a stack's bootstrap writes its kubeconfig: ``kubeconfig/<stack>.yaml`` in the project
    root, relative to the stack's working directory (cdktf.out/stacks/<stack>)."""
    return f"${{path.root}}/../../../kubeconfig/{stack}.yaml"


def public_address_variable(scope: Construct, challenge: str, fallback: str) -> TerraformVariable:
    """``public_address``: where the DNS A records point when it is not the ingress host (a router that
    forwards 80 and 443). ``fallback`` is the Terraform expression of the ingress host's address; with
    the HTTP-01 challenge the address the records get must not be private, checked at plan."""
    rules = [
        rule(
            'var.public_address == "" || can(cidrhost("${var.public_address}/32", 0))',
            "public_address must be empty or an IPv4 address such as 203.0.113.10.",
        )
    ]
    if challenge == "http01":
        # Cross-variable validation (Terraform 1.9+): checked at plan, before anything deploys.
        rules.append(
            rule(
                f'!can(regex("{PRIVATE_ADDRESS_REGEX}", '
                f'var.public_address != "" ? var.public_address : {fallback}))',
                "Let's Encrypt cannot reach a private address over HTTP-01: set public_address to "
                "the public address that forwards 80 and 443 here, or use letsencrypt_challenge "
                "dns01-cloudflare.",
            )
        )
    return TerraformVariable(
        scope,
        "public_address",
        type="string",
        default="",
        description="Address the DNS A records point at, if not the server's (NAT of 80 and 443).",
        validation=rules,
    )


def cloudflare_token_variable(scope: Construct) -> TerraformVariable:
    """The sensitive Cloudflare API token of Let's Encrypt's DNS-01 challenge."""
    return TerraformVariable(
        scope,
        "cloudflare_api_token",
        type="string",
        sensitive=True,
        description="Cloudflare API token with Zone:DNS:Edit on dns_zone, for Let's Encrypt DNS-01.",
        validation=[
            rule(
                'can(regex("^[A-Za-z0-9_-]{20,200}$", var.cloudflare_api_token))',
                "cloudflare_api_token must be a Cloudflare API token (letters, digits, - and _).",
            )
        ],
    )


def host_in_zone_rule(setting: str, host: str, zone_variable: str) -> TerraformVariableValidationConfig:
    """The zone variable ``zone_variable`` holds ``host``, the value of the stack setting ``setting``
    (a literal known at synth, so the rule reads no other variable)."""
    zone = f'lower(trimsuffix(var.{zone_variable}, "."))'
    return rule(
        f'"{host}" == {zone} || endswith("{host}", format(".%s", {zone}))',
        f"{setting} is {host}, which is not inside {zone_variable}: give the zone that holds it "
        f"(e.g. {host.partition('.')[2]}) or change {setting}.",
    )
