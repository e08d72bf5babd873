"""Validate rendered Kubernetes objects and Helm values against the real schemas.

Core kinds go through kubernetes-validate (the Kubernetes OpenAPI schemas); custom kinds through the
upstream CRDs in ../shared/upstream; Helm values through the chart's published values schema, or,
for charts that publish none, against the keys of the chart's default values.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.35"

# (apiVersion, kind) -> CRD file under ../shared/upstream
CRDS = {
    ("cert-manager.io/v1", "ClusterIssuer"): "cert-manager/cert-manager.io_clusterissuers.yaml",
    ("fleet.cattle.io/v1alpha1", "GitRepo"): "fleet/fleet.cattle.io_gitrepos.yaml",
    ("karpenter.sh/v1", "NodePool"): "karpenter/karpenter.sh_nodepools.yaml",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): "karpenter/karpenter.k8s.aws_ec2nodeclasses.yaml",
}

# Custom kinds with no upstream CRD in ../shared: checked structurally by their own tests only.
UNCHECKED_CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster")}


@cache
def _crd_schema(upstream: Path, relative: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((upstream / relative).read_text(encoding="utf-8"))
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise LookupError(f"{relative} has no version {version}")


def validate_manifest(manifest: dict[str, Any], upstream: Path) -> str:
    """Raise on an invalid object; return which schema checked it."""
    key = (manifest["apiVersion"], manifest["kind"])
    if key in CRDS:
        version = manifest["apiVersion"].rsplit("/", 1)[1]
        schema = _crd_schema(upstream, CRDS[key], version)
        jsonschema.Draft7Validator(schema).validate(manifest)
        return CRDS[key]
    if key in UNCHECKED_CUSTOM_KINDS:
        return "unchecked"
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    return f"kubernetes {KUBERNETES_VERSION}"


def load_schema(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return document


def validate_values(values: dict[str, Any], schema_path: Path, defaults_path: Path | None = None) -> None:
    """Check Helm values against a chart's values schema (JSON Schema, as JSON or YAML).

    Helm validates the values merged over the chart's defaults; where the defaults are given, so
    does this (the JupyterHub schema requires keys only the defaults carry)."""
    if defaults_path is not None:
        from gpu_constructs.helm import deep_merge

        values = deep_merge(yaml.safe_load(defaults_path.read_text(encoding="utf-8")), values)
    schema = load_schema(schema_path)
    # vault-helm names draft-07 by an https address that jsonschema does not recognize.
    declared = str(schema.get("$schema", ""))
    validator_class: Any = (
        jsonschema.Draft7Validator if "draft-07" in declared else jsonschema.validators.validator_for(schema)
    )
    validator_class(schema).validate(values)


def unknown_keys(values: Any, defaults: Any, path: str = "") -> list[str]:
    """Keys of ``values`` that the chart's default values do not have.

    A map whose default is empty (``{}``) is free-form, and lists are not descended into.
    """
    if not isinstance(values, dict) or not isinstance(defaults, dict) or not defaults:
        return []
    missing: list[str] = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in defaults:
            missing.append(where)
        else:
            missing.extend(unknown_keys(value, defaults[key], where))
    return missing


# Meta-arguments Terraform adds to every resource; not part of a provider's schema.
META_ARGUMENTS = {"//", "lifecycle", "depends_on", "provider", "count", "for_each"}


def argument_keys(node: Any, free_form: frozenset[str] = frozenset()) -> set[str]:
    """Every argument and nested block name in a synthesized resource, for checking a hand-written
    binding against its provider's reference page. Maps named in ``free_form`` hold user keys."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in META_ARGUMENTS:
                found.add(key)
                if key not in free_form:
                    found |= argument_keys(value, free_form)
    elif isinstance(node, list):
        for item in node:
            found |= argument_keys(item, free_form)
    return found
