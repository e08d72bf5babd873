"""Typed cdktf bindings for the linode/linode provider (v3.13.0), for what the lke stack uses.

No prebuilt cdktf package exists for this provider. Each class takes the Terraform arguments of its
reference page (../shared/upstream/provider-docs/linode/) as keyword arguments, with nested blocks
as typed dataclasses, and synthesizes exactly those arguments; tests check every emitted key against
the documented schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdktf import (
    TerraformDataSource,
    TerraformProvider,
    TerraformProviderGeneratorMetadata,
    TerraformResourceLifecycle,
)
from constructs import Construct

from gpu_constructs.errors import ConfigError
from gpu_constructs.providers._base import BoundResource, block, drop_none

PROVIDER_SOURCE = "linode/linode"
PROVIDER_VERSION = "3.13.0"


def _metadata() -> TerraformProviderGeneratorMetadata:
    return TerraformProviderGeneratorMetadata(provider_name="linode", provider_version=PROVIDER_VERSION)


class LinodeProvider(TerraformProvider):
    """``provider "linode"``. The token comes from a sensitive variable or LINODE_TOKEN."""

    def __init__(
        self, scope: Construct, id: str, *, token: str | None = None, api_version: str | None = None
    ) -> None:
        super().__init__(
            scope,
            id,
            terraform_resource_type="linode",
            terraform_generator_metadata=_metadata(),
            terraform_provider_source=PROVIDER_SOURCE,
        )
        self._arguments = {"token": token, "api_version": api_version}

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return drop_none(self._arguments)


class _LinodeResource(BoundResource):
    PROVIDER = "linode"
    VERSION = PROVIDER_VERSION


@dataclass(frozen=True)
class Autoscaler:
    min: int
    max: int


@dataclass(frozen=True)
class PoolTaint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class AclAddresses:
    ipv4: Sequence[str] | None = None
    ipv6: Sequence[str] | None = None


@dataclass(frozen=True)
class Acl:
    enabled: bool
    addresses: AclAddresses | None = None


@dataclass(frozen=True)
class ControlPlane:
    high_availability: bool | None = None
    audit_logs_enabled: bool | None = None
    acl: Acl | None = None


@dataclass(frozen=True)
class ClusterPool:
    """A ``pool`` block of linode_lke_cluster."""

    type: str
    count: int | None = None
    label: str | None = None
    firewall_id: str | None = None
    labels: Mapping[str, str] | None = None
    tags: Sequence[str] | None = None
    taint: Sequence[PoolTaint] | None = None
    autoscaler: Autoscaler | None = None
    disk_encryption: str | None = None
    k8s_version: str | None = None
    """LKE Enterprise only: the pool's nodes' version."""
    update_strategy: str | None = None
    """LKE Enterprise only: rolling_update or on_recycle (provider v3.13.0 linode/lke tests)."""


class LkeCluster(_LinodeResource):
    """``linode_lke_cluster``."""

    TYPE = "linode_lke_cluster"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        label: str,
        k8s_version: str,
        region: str,
        pool: Sequence[ClusterPool],
        control_plane: ControlPlane | None = None,
        tags: Sequence[str] | None = None,
        external_pool_tags: Sequence[str] | None = None,
        tier: str | None = None,
        lifecycle: TerraformResourceLifecycle | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {
                "label": label,
                "k8s_version": k8s_version,
                "region": region,
                "tier": tier,
                "pool": [block(p) for p in pool],
                "control_plane": [block(control_plane)] if control_plane else None,
                "tags": list(tags) if tags else None,
                "external_pool_tags": list(external_pool_tags) if external_pool_tags else None,
            },
            lifecycle=lifecycle,
        )

    @property
    def kubeconfig(self) -> str:
        """The base64-encoded kubeconfig (sensitive)."""
        return self.get_string_attribute("kubeconfig")


class LkeNodePool(_LinodeResource):
    """``linode_lke_node_pool``."""

    TYPE = "linode_lke_node_pool"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cluster_id: str,
        type: str,
        node_count: int | None = None,
        label: str | None = None,
        firewall_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        tags: Sequence[str] | None = None,
        taint: Sequence[PoolTaint] | None = None,
        autoscaler: Autoscaler | None = None,
        disk_encryption: str | None = None,
        k8s_version: str | None = None,
        update_strategy: str | None = None,
        lifecycle: TerraformResourceLifecycle | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {
                "cluster_id": cluster_id,
                "k8s_version": k8s_version,
                "update_strategy": update_strategy,
                "type": type,
                "node_count": node_count,
                "label": label,
                "firewall_id": firewall_id,
                "labels": dict(labels) if labels else None,
                "tags": list(tags) if tags else None,
                "taint": [block(t) for t in taint] if taint else None,
                "autoscaler": [block(autoscaler)] if autoscaler else None,
                "disk_encryption": disk_encryption,
            },
            lifecycle=lifecycle,
        )


@dataclass(frozen=True)
class Filter:
    """A ``filter`` block of a linode list data source."""

    name: str
    values: Sequence[str]
    match_by: str | None = None


class LkeClusters(TerraformDataSource):
    """``data "linode_lke_clusters"``: the account's LKE clusters that match the filters (provider
    v3.13.0 docs/data-sources/lke_clusters.md: ``filter``, ``order_by``, ``order``; each cluster in
    ``lke_clusters`` with its ``label``, ``k8s_version``, ``tier`` and more)."""

    TYPE = "linode_lke_clusters"

    def __init__(self, scope: Construct, id: str, *, filter: Sequence[Filter]) -> None:
        super().__init__(
            scope, id, terraform_resource_type=self.TYPE, terraform_generator_metadata=_metadata()
        )
        self._arguments = {"filter": [drop_none(block(f)) for f in filter]}

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return drop_none(self._arguments)

    @property
    def fqn_path(self) -> str:
        """``data.linode_lke_clusters.<name>`` for use inside a Terraform expression."""
        return f"data.{self.TYPE}.{self.friendly_unique_id}"


class LkeClusterData(TerraformDataSource):
    """``data "linode_lke_cluster"``: one cluster by ``id``, with its ``pools`` (each with ``type``,
    ``tags`` and ``nodes[].status``; provider v3.13.0 docs/data-sources/lke_cluster.md). ``count``
    as a Terraform expression, for a cluster that may not exist yet."""

    TYPE = "linode_lke_cluster"

    def __init__(self, scope: Construct, id: str, *, cluster_id: str, count: str | None = None) -> None:
        super().__init__(
            scope, id, terraform_resource_type=self.TYPE, terraform_generator_metadata=_metadata()
        )
        self._arguments = {"id": cluster_id}
        if count is not None:
            self.add_override("count", count)

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return drop_none(self._arguments)

    @property
    def fqn_path(self) -> str:
        """``data.linode_lke_cluster.<name>`` for use inside a Terraform expression."""
        return f"data.{self.TYPE}.{self.friendly_unique_id}"


FIREWALL_PROTOCOLS = ("TCP", "UDP", "ICMP", "IPENCAP")
"""What the provider's schema accepts (linode/firewall/framework_schema_resource.go, v3.13.0);
the reference page lists the first three, the validator and the Linode API also take IPENCAP."""
FIREWALL_RULE_LIMIT = 25
"""Inbound (and outbound) rules per Cloud Firewall (Linode's Cloud Firewall limits)."""


@dataclass(frozen=True)
class FirewallRule:
    label: str
    action: str
    protocol: str
    ports: str | None = None
    ipv4: Sequence[str] | None = None
    ipv6: Sequence[str] | None = None

    def __post_init__(self) -> None:
        # The provider's schema: label 3-32 characters, action ACCEPT or DROP, the protocols above.
        if not 3 <= len(self.label) <= 32:
            raise ConfigError("firewall rule label", self.label, "use 3 to 32 characters")
        if self.action not in ("ACCEPT", "DROP"):
            raise ConfigError(f"{self.label}.action", self.action, "use ACCEPT or DROP")
        if self.protocol not in FIREWALL_PROTOCOLS:
            raise ConfigError(
                f"{self.label}.protocol", self.protocol, f"use one of {', '.join(FIREWALL_PROTOCOLS)}"
            )
        if self.ports is not None and self.protocol not in ("TCP", "UDP"):
            raise ConfigError(f"{self.label}.ports", self.ports, f"{self.protocol} has no ports; drop them")


class Firewall(_LinodeResource):
    """``linode_firewall``."""

    TYPE = "linode_firewall"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        label: str,
        inbound_policy: str,
        outbound_policy: str,
        inbound: Sequence[FirewallRule] = (),
        outbound: Sequence[FirewallRule] = (),
        disabled: bool | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        for direction, rules in (("inbound", inbound), ("outbound", outbound)):
            if len(rules) > FIREWALL_RULE_LIMIT:
                raise ConfigError(
                    f"{label}.{direction}",
                    len(rules),
                    f"a Cloud Firewall holds at most {FIREWALL_RULE_LIMIT} rules",
                )
        super().__init__(
            scope,
            id,
            {
                "label": label,
                "inbound_policy": inbound_policy,
                "outbound_policy": outbound_policy,
                "inbound": [drop_none(block(rule)) for rule in inbound] or None,
                "outbound": [drop_none(block(rule)) for rule in outbound] or None,
                "disabled": disabled,
                "tags": list(tags) if tags else None,
            },
        )


__all__ = [
    "Acl",
    "AclAddresses",
    "Autoscaler",
    "ClusterPool",
    "ControlPlane",
    "Filter",
    "Firewall",
    "FirewallRule",
    "LinodeProvider",
    "LkeCluster",
    "LkeClusterData",
    "LkeClusters",
    "LkeNodePool",
    "PoolTaint",
]
