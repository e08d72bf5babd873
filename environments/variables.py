"""Helpers for stack-level Terraform variables, shared by the environments."""

from __future__ import annotations

from cdktf import TerraformVariableValidationConfig


def rule(condition: str, error_message: str) -> TerraformVariableValidationConfig:
    """A variable validation. In Terraform's JSON syntax a bare string is a literal template, so the
    condition is wrapped in ``${...}`` to be evaluated as an expression."""
    return TerraformVariableValidationConfig(condition=f"${{{condition}}}", error_message=error_message)


def pinned_image_rule(name: str) -> TerraformVariableValidationConfig:
    """The variable ``name`` holds an image reference with a pinned tag or digest, never ``latest``."""
    return rule(
        f'can(regex("^[^:@ ]+(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[a-f0-9]{{64}})$", var.{name})) '
        f'&& !endswith(var.{name}, ":latest")',
        f"{name} must carry a pinned tag or digest, never :latest.",
    )
