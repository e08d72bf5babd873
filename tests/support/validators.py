"""Validate rendered Kubernetes objects and Helm values against the real schemas.

Core kinds go through kubernetes-validate (the Kubernetes OpenAPI schemas); custom kinds through the
upstream CRDs in ../shared/upstream; Helm values through the chart's published values schema, or,
for charts that publish none, against the keys of the chart's default values.
"""

from __future__ import annotations

import contextlib
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
    (
        "networking.linode.com/alpha1v1",
        "CloudFirewall",
    ): "charts/cloud-firewall-crd-0.2.0/templates/cloud-firewall.yaml",
    ("http.keda.sh/v1alpha1", "HTTPScaledObject"): (
        "charts/keda-add-ons-http-0.15.0/templates/crds/crd-httpscaledobjects.yaml"
    ),
    **{
        ("monitoring.coreos.com/v1", kind): (
            f"charts/kube-prometheus-stack-88.5.3/charts/crds/crds/crd-{kind.lower()}s.yaml"
        )
        for kind in ("PodMonitor", "PrometheusRule", "ServiceMonitor")
    },
}

# Custom kinds with no CRD file of their own in ../shared: CloudNativePG's come with its chart, so the
# rendered-objects gate (tests/gates/test_rendered_objects.py) checks them against the CRDs the chart renders.
UNCHECKED_CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "ScheduledBackup")}


@cache
def _crd_schema(upstream: Path, relative: str, version: str) -> dict[str, Any]:
    text = (upstream / relative).read_text(encoding="utf-8")
    # A chart's CRD template is wrapped in lines of template actions only ({{- if .Values.crds.install }}).
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("{{"))
    crd = yaml.safe_load(text)
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
META_ARGUMENTS = {"//", "lifecycle", "depends_on", "provider", "count", "for_each", "provisioner"}


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


# --- Rendered objects: built-in kinds strictly, custom resources by CRD schema and CEL rules --------

# CRDs installed by something other than a release of the stack: Rancher installs Fleet and its CRDs
# itself once its release is ready (fleet.cattle.io_gitrepos.yaml from rancher/fleet, in ../shared).
PLATFORM_CRDS = ("fleet/fleet.cattle.io_gitrepos.yaml",)
# CRDs in ../shared/upstream, used for a kind whose CRD no release of the stack renders.
UPSTREAM_CRDS = (
    "cert-manager/cert-manager.io_clusterissuers.yaml",
    "karpenter/karpenter.sh_nodepools.yaml",
    "karpenter/karpenter.k8s.aws_ec2nodeclasses.yaml",
    *PLATFORM_CRDS,
)


class ObjectInvalid(AssertionError):
    """A rendered object the API server would reject."""


def _kubernetes_cel_library() -> dict[str, Any]:
    """The Kubernetes CEL library functions (k8s.io/apiserver/pkg/cel/library) the validated CRDs'
    rules call, on top of cel-python's standard ones. Any other function fails evaluation loudly
    (cel-python raises "undeclared reference")."""
    import re as regex
    from urllib.parse import urlsplit

    from celpy import celtypes

    def find(text: Any, pattern: Any) -> Any:
        match = regex.search(str(pattern), str(text))
        return celtypes.StringType(match.group(0) if match else "")

    def find_all(text: Any, pattern: Any, limit: Any = -1) -> Any:
        found = [celtypes.StringType(m.group(0)) for m in regex.finditer(str(pattern), str(text))]
        return celtypes.ListType(found if int(limit) < 0 else found[: int(limit)])

    def split(text: Any, separator: Any, limit: Any = -1) -> Any:
        limit = int(limit)
        if limit == 0:
            return celtypes.ListType([])
        parts = str(text).split(str(separator), limit - 1 if limit > 0 else -1)
        return celtypes.ListType([celtypes.StringType(part) for part in parts])

    def is_url(text: Any) -> Any:
        # url.go: Go's url.ParseRequestURI accepts an absolute URI or an absolute path.
        value = str(text)
        try:
            parts = urlsplit(value)
        except ValueError:
            return celtypes.BoolType(False)
        return celtypes.BoolType(bool(parts.scheme) or value.startswith("/"))

    def join(items: Any, separator: Any = "") -> Any:
        return celtypes.StringType(str(separator).join(str(item) for item in items))

    return {
        "find": find,
        "findAll": find_all,
        "split": split,
        "isURL": is_url,
        "join": join,
        "lowerAscii": lambda text: celtypes.StringType(str(text).lower()),
        "upperAscii": lambda text: celtypes.StringType(str(text).upper()),
        "trim": lambda text: celtypes.StringType(str(text).strip()),
        "replace": lambda text, old, new: celtypes.StringType(str(text).replace(str(old), str(new))),
        "indexOf": lambda text, sub: celtypes.IntType(str(text).find(str(sub))),
    }


@cache
def _cel_program(rule: str) -> Any:
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=_kubernetes_cel_library())


def evaluate_cel(rule: str, value: Any) -> Any:
    """Evaluate one ``x-kubernetes-validations`` rule with ``self`` bound to ``value``."""
    import celpy

    result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    if isinstance(result, celpy.CELEvalError):
        raise result
    return result


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The object after the API server's structural defaulting (CEL rules see defaulted values)."""
    import copy

    if isinstance(value, dict):
        value = dict(value)
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in schema.get("properties", {}):
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def _check_node(schema: dict[str, Any], value: Any, path: str, problems: list[str]) -> None:
    """CEL rules at every level (properties, items, additionalProperties) and fields the API server
    would prune because the schema does not know them."""
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue  # transition rules need the previous object: out of scope
        try:
            ok = evaluate_cel(rule["rule"], value)
        except Exception as error:  # an evaluation error rejects the object on the API server too
            problems.append(f"{path}: rule {rule['rule']!r} could not be evaluated: {error}")
            continue
        if not (isinstance(ok, bool | int) and bool(ok)):  # celtypes.BoolType subclasses int
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            if "messageExpression" in rule:
                # the API server falls back to message when the expression fails, likewise here
                with contextlib.suppress(Exception):
                    message = str(evaluate_cel(rule["messageExpression"], value))
            problems.append(f"{path}: Invalid value: {message}")
    properties = schema.get("properties", {})
    if isinstance(value, dict):
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            where = f"{path}.{name}"
            if name in properties:
                _check_node(properties[name], item, where, problems)
            elif isinstance(extra, dict):
                _check_node(extra, item, where, problems)
            elif (
                properties
                and not extra
                and not schema.get("x-kubernetes-preserve-unknown-fields")
                and (path != "" or name not in ("apiVersion", "kind", "metadata"))
            ):
                problems.append(f"{where}: unknown field (the API server would drop it)")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _check_node(schema["items"], item, f"{path}[{index}]", problems)


@cache
def _builtin_validator(kube_version: str, api_version: str, kind: str) -> tuple[Any, str]:
    """A strict validator (unknown fields fail) for a built-in kind, from kubernetes-validate's
    schemas for the newest version not newer than the cluster's; built once per kind."""
    import re as regex

    from kubernetes_validate import utils
    from referencing import Registry, Resource

    wanted = utils.major_minor(kube_version)
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted][-1]
    group = regex.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = utils.schema_contents(f"{directory}/{kind.lower()}-{group}.json", kube_version)
    except FileNotFoundError as error:
        raise ObjectInvalid(
            f"{kind} ({api_version}): not a Kubernetes {wanted} kind and no CRD defines it"
        ) from error
    definitions = utils.schema_contents(f"{directory}/_definitions.json", kube_version)
    registry: Any = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry), utils.major_minor(version)


@cache
def _crd_validator(key: tuple[str, str], schema: str) -> Any:
    return jsonschema.Draft7Validator(json.loads(schema))


@cache
def _upstream_crd(path: Path) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return crd


class ObjectValidator:
    """Validates the objects of one stack for its Kubernetes version and the CRDs it installs."""

    def __init__(self, kube_version: str, crds: list[dict[str, Any]], upstream: Path) -> None:
        self.kube_version = kube_version
        self.schemas: dict[tuple[str, str], dict[str, Any]] = {}
        self.sources: dict[tuple[str, str], str] = {}
        for relative in UPSTREAM_CRDS:
            self._add(_upstream_crd(upstream / relative), relative)
        for crd in crds:  # the stack's own CRDs win over ../shared's copies
            self._add(crd, f"CRD {crd['metadata']['name']} rendered by the stack")

    def _add(self, crd: dict[str, Any], source: str) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True) and "schema" in version:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                self.schemas[key] = version["schema"]["openAPIV3Schema"]
                self.sources[key] = source

    def validate(self, obj: dict[str, Any]) -> str:
        """Raise ObjectInvalid with the API server's kind of message; return what checked it."""
        if obj.get("kind") == "List" and obj.get("apiVersion") == "v1":
            # Helm flattens a List into its items (resource.Builder.Flatten)
            return ", ".join(self.validate(item) for item in obj.get("items", []))
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        name = f"{key[1]} {obj.get('metadata', {}).get('name')}"
        if key in self.schemas:
            schema = self.schemas[key]
            defaulted = apply_defaults(schema, obj)
            problems: list[str] = []
            validator = _crd_validator(key, json.dumps(schema, sort_keys=True))
            problems += [
                f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(defaulted)
            ]
            _check_node(schema, defaulted, "", problems)
            if problems:
                raise ObjectInvalid(f"{name} ({key[0]}): " + "; ".join(problems))
            return self.sources[key]
        validator, schema_version = _builtin_validator(self.kube_version, *key)
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise ObjectInvalid(
                f"{name} ({key[0]}, Kubernetes {schema_version} strict): {where}: {error.message}"
            )
        return f"kubernetes {schema_version}"
