"""Helpers for stack-level Terraform variables, shared by the environments."""

from __future__ import annotations

from cdktf import TerraformVariableValidationConfig


def rule(condition: str, error_message: str) -> TerraformVariableValidationConfig:
    """A variable validation. In Terraform's JSON syntax a bare string is a literal template, so the
    condition is wrapped in ``${...}`` to be evaluated as an expression."""
    return TerraformVariableValidationConfig(condition=f"${{{condition}}}", error_message=error_message)
