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

from cdktf import TerraformDataSource, TerraformStack, Token
from constructs import Construct

from gpu_constructs import versions
from gpu_constructs.providers._base import drop_none

PROVIDER_SOURCE = "hashicorp/external"
PROVIDER_VERSION = versions.TERRAFORM_PROVIDER_EXTERNAL.version


def require_external(scope: Construct) -> None:
    """Pin the provider in the stack's ``required_providers``. No ``provider "external"`` block: the
    provider takes no configuration, and Terraform configures one without a block of its own (an
    empty block would read as a lost struct to the stacks' checks)."""
    TerraformStack.of(scope).add_override(
        "terraform.required_providers.external", {"source": PROVIDER_SOURCE, "version": PROVIDER_VERSION}
    )


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
        # No generator metadata: cdktf would then look for a provider construct in the stack.
        super().__init__(scope, id, terraform_resource_type="external")
        require_external(scope)
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
