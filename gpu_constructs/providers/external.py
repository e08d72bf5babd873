"""Typed cdktf bindings for the hashicorp/external provider (v2.3.5): its one data source.

``data "external"`` runs ``program`` (a command and its arguments, no shell) on the machine that runs
Terraform whenever the data source is read (every plan, or the apply when ``query`` holds a value
not yet known), writes ``query`` to its stdin as one JSON object of strings and reads back one
JSON object of strings, ``result`` (registry.terraform.io/providers/hashicorp/external/2.3.5,
data-sources/external, "External Program Protocol"). The provider takes no configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cdktf import TerraformDataSource, TerraformProvider, TerraformProviderGeneratorMetadata, Token
from constructs import Construct

from gpu_constructs import versions
from gpu_constructs.providers._base import drop_none

PROVIDER_SOURCE = "hashicorp/external"
PROVIDER_VERSION = versions.TERRAFORM_PROVIDER_EXTERNAL.version


def _metadata() -> TerraformProviderGeneratorMetadata:
    return TerraformProviderGeneratorMetadata(provider_name="external", provider_version=PROVIDER_VERSION)


class ExternalProvider(TerraformProvider):
    """``provider "external"``: no arguments."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(
            scope,
            id,
            terraform_resource_type="external",
            terraform_generator_metadata=_metadata(),
            terraform_provider_source=PROVIDER_SOURCE,
        )

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return {}


class DataExternal(TerraformDataSource):
    """``data "external"``: ``program`` and ``query`` as the provider documents them."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        program: Sequence[str],
        query: Mapping[str, str] | None = None,
        working_dir: str | None = None,
    ) -> None:
        super().__init__(
            scope, id, terraform_resource_type="external", terraform_generator_metadata=_metadata()
        )
        if not program:
            raise ValueError("program needs at least the command to run")
        self._arguments = {
            "program": list(program),
            "query": dict(query) if query else None,
            "working_dir": working_dir,
        }

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return drop_none(self._arguments)

    def result(self, key: str) -> str:
        """A reference to one value of the program's answer."""
        return Token.as_string(self.interpolation_for_attribute(f"result.{key}"))
