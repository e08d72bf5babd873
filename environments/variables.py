"""Helpers for stack-level Terraform variables, shared by the environments."""

from __future__ import annotations

from cdktf import TerraformVariable, TerraformVariableValidationConfig
from constructs import Construct


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
