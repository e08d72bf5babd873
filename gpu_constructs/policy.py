"""Synth-time policy over a whole stack, as a cdktf Aspect.

Every environment stack adds :class:`StackPolicy`. It reads each resource's Terraform configuration
(and, for Helm releases, the values documents and the Kubernetes objects in them) and fails the
synth, naming the construct path and the fix, when it finds:

- a workload that requests ``nvidia.com/gpu`` without the cluster's GPU toleration, GPU node
  selection or runtime class;
- a chart from a repository without a pinned version, or a container image without a pinned tag;
- a secret-looking literal (a password, token or private key written into the configuration);
- unencrypted block storage or databases, or EC2 metadata that does not require IMDSv2;
- a block that synthesized to nulls (a struct jsii did not convert).

The checks are plain functions over dicts (:func:`problems`), so they are tested on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsii
import yaml
from cdktf import IAspect, TerraformResource, TerraformVariable
from constructs import IConstruct

from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster

CHART_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
SECRET_KEY = re.compile(r"(^|[_.-])(password|passwd|token|secret|private_?key|api_?key|secret_?key)$", re.I)
SECRET_TEXT = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    # k3s' etcd-s3-config-secret (and any *-config-secret) names a Secret, it is not one
    re.compile(r"\b(password|passwd|token|(?<!config-)secret)\s*[=:]\s*['\"]?(?![$'\"\s])[^'\"\s]{8,}", re.I),
)


class PolicyError(ValueError):
    """The stack breaks a policy; the message names every problem, its construct path and the fix."""


TOKEN = re.compile(r"\$\{TfToken\[[^\]]*\]\}")


def _is_reference(value: str) -> bool:
    """A value Terraform fills in: a cdktf token or a ``${...}`` expression."""
    return value.startswith("${")


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) for every entry of nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, str(key), value
            yield from _strings(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield f"{path}[{index}]", "", value
            yield from _strings(value, f"{path}[{index}]")


def secret_problems(config: Any) -> list[str]:
    found: list[str] = []
    # {"secretName": ..., "secretKey": ...} names a key of a Secret (vault-helm's
    # server.extraSecretEnvironmentVars), not a secret: its secretKey is not checked as one.
    secret_refs: set[str] = set()
    for where, key, value in _strings(config):
        if isinstance(value, dict) and {"secretName", "secretKey"} <= set(value):
            secret_refs.add(f"{where}.secretKey")
        if where in secret_refs:
            continue
        # A Kubernetes env var: {"name": "DB_PASSWORD", "value": "..."}
        env_name = value.get("name") if isinstance(value, dict) else None
        env_value = value.get("value") if isinstance(value, dict) else None
        if (
            isinstance(env_name, str)
            and isinstance(env_value, str)
            and SECRET_KEY.search(env_name)
            and env_value
            and not _is_reference(env_value)
        ):
            found.append(f"{where} sets {env_name} to a literal: use a Secret (valueFrom) or Vault")
        if not isinstance(value, str) or not value or _is_reference(value):
            continue
        # References inside a longer string are not literals; the text around them may be.
        text = TOKEN.sub("${ref}", value)
        if SECRET_KEY.search(key):
            found.append(f"{where} is a literal secret: use a sensitive variable or Vault")
        elif any(pattern.search(text) for pattern in SECRET_TEXT):
            found.append(f"{where} contains a secret-looking literal: use a sensitive variable or Vault")
    return found


def _pinned_image(image: str) -> bool:
    if _is_reference(image) or "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def image_problems(document: Any) -> list[str]:
    found: list[str] = []
    for where, key, value in _strings(document):
        if key == "image" and isinstance(value, str) and not _pinned_image(value):
            found.append(f"{where} is {value!r}: pin the image to a version tag or a digest")
        if isinstance(value, dict) and "repository" in value and "tag" in value:
            tag = value["tag"]
            if not isinstance(tag, str) or tag in ("", "latest"):
                found.append(f"{where}.tag is {tag!r}: pin the image to a version tag")
    return found


def chart_problems(config: dict[str, Any]) -> list[str]:
    remote = config.get("repository") or str(config.get("chart", "")).startswith("oci://")
    version = str(config.get("version") or "")
    if remote and not CHART_VERSION.match(version):
        return [f"chart {config.get('chart')!r} has version {version or None!r}: pin an exact chart version"]
    return []


def _pod_specs(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec.get("template", {}).get("spec", {})


def _requests_gpu(pod: dict[str, Any]) -> bool:
    for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            if str((resources.get(section) or {}).get(GPU_RESOURCE, "0")) not in ("0", ""):
                return True
    return False


def _selects(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = pod.get("nodeSelector") or {}
    if all(selector.get(key) == value for key, value in labels.items()):
        return True
    terms = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    return bool(terms) and all(
        all(
            any(
                e.get("key") == key and value in e.get("values", []) for e in term.get("matchExpressions", [])
            )
            for key, value in labels.items()
        )
        for term in terms
    )


def gpu_problems(manifest: dict[str, Any], cluster: GpuCluster) -> list[str]:
    found: list[str] = []
    name = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
    wanted = cluster.gpu_toleration
    labels = {**cluster.gpu_node_selector, **cluster.node_pool_labels}
    for pod in _pod_specs(manifest):
        if not _requests_gpu(pod):
            continue
        tolerated = any(
            t.get("key") == wanted["key"]
            and t.get("effect", wanted["effect"]) == wanted["effect"]
            and (t.get("operator") == "Exists" or t.get("value") == wanted["value"])
            for t in pod.get("tolerations") or []
        )
        if not tolerated:
            found.append(
                f"{name} requests {GPU_RESOURCE} but does not tolerate {cluster.gpu_toleration_taint}"
            )
        if not _selects(pod, labels):
            found.append(f"{name} requests {GPU_RESOURCE} but does not select GPU nodes {labels}")
        if cluster.runtime_class and pod.get("runtimeClassName") != cluster.runtime_class:
            found.append(
                f"{name} requests {GPU_RESOURCE} but does not set runtimeClassName {cluster.runtime_class}"
            )
    return found


def _blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return [v for v in value or [] if isinstance(v, dict)]


def aws_problems(resource_type: str, config: dict[str, Any]) -> list[str]:
    found: list[str] = []
    if (
        resource_type in ("aws_db_instance", "aws_rds_cluster")
        and config.get("storage_encrypted") is not True
    ):
        found.append(f"{resource_type} is not encrypted: set storage_encrypted = true")
    if resource_type == "aws_ebs_volume" and config.get("encrypted") is not True:
        found.append("aws_ebs_volume is not encrypted: set encrypted = true")
    if resource_type in ("aws_launch_template", "aws_instance"):
        tokens = [b.get("http_tokens") for b in _blocks(config.get("metadata_options"))]
        if tokens != ["required"]:
            found.append(
                f"{resource_type} does not require IMDSv2: set metadata_options.http_tokens = required"
            )
        volumes = [b.get("ebs") or {} for b in _blocks(config.get("block_device_mappings"))]
        volumes += _blocks(config.get("root_block_device")) + _blocks(config.get("ebs_block_device"))
        for volume in volumes:
            flat = volume[0] if isinstance(volume, list) and volume else volume
            if isinstance(flat, dict) and flat.get("encrypted") not in (True, "true"):
                found.append(f"{resource_type} has an unencrypted volume: set encrypted = true")
    return found


def null_block_problems(config: dict[str, Any]) -> list[str]:
    """Blocks whose attributes all synthesized to null or empty: a plain dict given where jsii expects
    a struct in a list (``route=[{...}]``) loses its snake_case keys without an error."""

    def empty(value: Any) -> bool:
        return value is None or value in ({}, [], "")

    found: list[str] = []
    for where, key, value in _strings(config):
        # A list element (key "") that is empty, or a block whose every attribute is null or empty.
        if isinstance(value, dict) and (value or key == "") and all(empty(v) for v in value.values()):
            found.append(
                f"{where} synthesized to nulls: pass the typed struct (e.g. RouteTableRoute), not a dict"
            )
    return found


def node_class_problems(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("kind") != "EC2NodeClass":
        return []
    found: list[str] = []
    name = manifest.get("metadata", {}).get("name")
    spec = manifest.get("spec", {})
    if spec.get("metadataOptions", {}).get("httpTokens") != "required":
        found.append(f"EC2NodeClass {name} does not require IMDSv2: set metadataOptions.httpTokens: required")
    for mapping in spec.get("blockDeviceMappings", []):
        if mapping.get("ebs", {}).get("encrypted") is not True:
            found.append(f"EC2NodeClass {name} has an unencrypted volume: set ebs.encrypted: true")
    return found


def values_documents(config: dict[str, Any]) -> list[Any]:
    return [yaml.safe_load(text) for text in config.get("values") or [] if isinstance(text, str)]


def manifests_in(document: Any) -> list[dict[str, Any]]:
    """Kubernetes objects in a values document: the bundled chart's ``manifests`` list."""
    if isinstance(document, dict) and isinstance(document.get("manifests"), list):
        return [m for m in document["manifests"] if isinstance(m, dict) and "kind" in m]
    return []


def problems(resource_type: str, config: dict[str, Any], cluster: GpuCluster | None) -> list[str]:
    """Every policy problem of one resource's Terraform configuration."""
    found = secret_problems({k: v for k, v in config.items() if k != "values"})
    found += aws_problems(resource_type, config)
    found += null_block_problems(config)
    if resource_type == "helm_release":
        found += chart_problems(config)
        for document in values_documents(config):
            found += secret_problems(document) + image_problems(document)
            for manifest in manifests_in(document):
                found += node_class_problems(manifest)
                if cluster is not None:
                    found += gpu_problems(manifest, cluster)
    return found


@jsii.implements(IAspect)
class StackPolicy:
    """The policy Aspect: ``Aspects.of(stack).add(StackPolicy(cluster))``."""

    def __init__(self, cluster: GpuCluster | None) -> None:
        self.cluster = cluster

    def visit(self, node: IConstruct) -> None:
        path = node.node.path
        found: list[str] = []
        if isinstance(node, TerraformVariable):
            (config,) = node.to_terraform()["variable"].values()
            if SECRET_KEY.search(node.node.id) and not config.get("sensitive"):
                found.append(f"variable {node.node.id} looks secret: declare it with sensitive = true")
            if "default" in config:
                found += secret_problems({node.node.id: config["default"]})
        elif isinstance(node, TerraformResource):
            resource_type = node.terraform_resource_type
            body = node.to_terraform()["resource"][resource_type]
            (config,) = body.values()
            found = problems(resource_type, {k: v for k, v in config.items() if k != "//"}, self.cluster)
        if found:
            raise PolicyError(f"policy: {path}: " + "; ".join(found))
