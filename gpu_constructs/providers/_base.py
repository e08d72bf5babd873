"""Shared machinery of the hand-written provider bindings: a resource base that synthesizes exactly
the Terraform arguments it was given, and typed nested blocks as frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from cdktf import TerraformProviderGeneratorMetadata, TerraformResource, TerraformResourceLifecycle
from constructs import Construct


def drop_none(value: Any) -> Any:
    """Terraform arguments without the unset ones (None), recursively."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def block(value: Any) -> Any:
    """A dataclass as a Terraform block: nested blocks become lists of one, as Terraform JSON takes them."""
    if value is None:
        return None
    data = asdict(value)
    for key in list(data):
        attribute = getattr(value, key)
        if hasattr(attribute, "__dataclass_fields__"):
            data[key] = [block(attribute)]
        elif (
            isinstance(attribute, (list, tuple))
            and attribute
            and hasattr(attribute[0], "__dataclass_fields__")
        ):
            data[key] = [block(item) for item in attribute]
        elif isinstance(attribute, tuple):
            data[key] = list(attribute)
        elif isinstance(attribute, Mapping):
            data[key] = dict(attribute)
    return data


class BoundResource(TerraformResource):
    """A resource of a hand-bound provider: ``TYPE`` and the provider's metadata set by subclasses."""

    TYPE = ""
    PROVIDER = ""
    VERSION = ""

    def __init__(
        self,
        scope: Construct,
        id: str,
        arguments: Mapping[str, Any],
        *,
        depends_on: Sequence[Any] | None = None,
        lifecycle: TerraformResourceLifecycle | None = None,
        provisioners: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            terraform_resource_type=self.TYPE,
            terraform_generator_metadata=TerraformProviderGeneratorMetadata(
                provider_name=self.PROVIDER, provider_version=self.VERSION
            ),
            depends_on=list(depends_on) if depends_on else None,
            lifecycle=lifecycle,
            provisioners=list(provisioners) if provisioners else None,
        )
        self._arguments = dict(arguments)

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return drop_none(self._arguments)

    @property
    def id_ref(self) -> str:
        return self.get_string_attribute("id")
