"""Helm releases with layered values, and the release that installs a construct's own manifests.

Values for a chart come from three layers, later ones winning: ``helm-values/<chart>/base.yaml``,
``helm-values/<chart>/<overlay>.yaml`` (the environment: dev, staging, production) and what the
construct sets from its typed props and the GPU cluster contract. The contract layer is applied
last on purpose: a values file cannot take a GPU workload off its GPU nodes by accident.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cdktf import AssetType, TerraformAsset, TerraformStack
from cdktf_cdktf_provider_helm.release import Release, ReleaseSetListStruct, ReleaseSetSensitive
from constructs import Construct

from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError, did_you_mean

CHART_DIR = Path(__file__).parent / "charts" / "manifests"
UNCLOAKABLE = frozenset(".[]\\")
"""Characters a ``set_sensitive`` path segment cannot hold: terraform-provider-helm v3.1.1
(helm/resource_helm_release.go, cloakSetValue) splits the name on ``.`` and walks map keys, so a
list index or an escaped dot stops the walk and leaves the value in clear text in the release's
``metadata.values``."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def content_digest(document: Any) -> str:
    """Ten hex digits of the SHA-256 of ``document`` as JSON with sorted keys: a name suffix that
    changes with an object's content, for objects whose change must be a new object (an immutable
    Job spec, a ConfigMap its readers never read again)."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:10]


def to_yaml(document: Any) -> str:
    """Deterministic YAML: sorted keys, block style."""
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, width=1000)


@dataclass(frozen=True)
class ValuesLayers:
    """Where a stack's values files live and which overlay it reads."""

    overlay: str
    """The environment's file name without ``.yaml``: dev, staging or production."""
    directory: Path = field(default_factory=lambda: Path.cwd() / "helm-values")
    """The folder with one sub-folder of values files per chart."""

    def __post_init__(self) -> None:
        if not self.directory.is_dir():
            raise ConfigError(
                "values_dir", str(self.directory), "give the folder that holds <chart>/base.yaml files"
            )
        overlays = sorted({p.stem for p in self.directory.glob("*/*.yaml")} - {"base"})
        if overlays and self.overlay not in overlays:
            # A misspelt overlay would otherwise deploy the base values alone, without a word. A
            # folder of base files only has no overlay to misspell.
            raise ConfigError(
                "values overlay",
                self.overlay,
                f"no <chart>/{self.overlay}.yaml in {self.directory}; {did_you_mean(self.overlay, overlays)}"
                f"the overlays there are {', '.join(overlays) or 'none'} (add the file, or pick one)",
            )

    def load(self, chart: str) -> dict[str, Any]:
        """``base.yaml`` deep-merged with ``<overlay>.yaml`` for ``chart``; missing files are empty."""
        merged: dict[str, Any] = {}
        for name in ("base", self.overlay):
            path = self.directory / chart / f"{name}.yaml"
            if not path.exists():
                continue
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(document, dict):
                raise ConfigError(str(path), type(document).__name__, "a values file must be a map")
            merged = deep_merge(merged, document)
        return merged


def release(
    scope: Construct,
    id: str,
    *,
    cluster: GpuCluster,
    name: str,
    chart: str,
    namespace: str,
    values: Mapping[str, Any],
    repository: str | None = None,
    version: str | None = None,
    depends_on: Sequence[Any] = (),
    timeout: int = 600,
    wait: bool = True,
    atomic: bool = True,
    set_lists: Mapping[str, Any] | None = None,
    set_sensitive: Mapping[str, str] | None = None,
) -> Release:
    """A helm_release into ``cluster``, with one values document and the settings every release
    here shares.

    The release comes after the cluster's ``ready`` resources and ``depends_on``, and is replaced
    with the cluster (:meth:`GpuCluster.installed`): a release in a replaced cluster keeps its
    "deployed" state, so without that the new cluster would stay without it.

    ``set_lists`` sets values paths to lists only known at plan time (a list variable), which a
    values document cannot carry. ``atomic`` makes Helm wait as well, whatever ``wait`` says (helm
    v3.18 pkg/action/install.go, upgrade.go: ``Wait = Wait || Atomic``): a release whose objects
    cannot become ready during the apply needs both off.

    ``set_sensitive`` sets values paths to sensitive references, never in a values document. Each
    path is map keys joined by dots (see UNCLOAKABLE): the helm provider replaces only such a path
    with "(sensitive value)" in the release's ``metadata.values``."""
    for path in set_sensitive or {}:
        if any(char in UNCLOAKABLE for char in path.replace(".", "")) or "" in path.split("."):
            raise ConfigError(
                "set_sensitive",
                path,
                "give a path of map keys joined by dots (no list index, no escaped dot): the helm "
                "provider cannot cloak any other in the release's metadata.values",
            )
    return Release(
        scope,
        id,
        name=name,
        chart=chart,
        repository=repository,
        version=version,
        namespace=namespace,
        create_namespace=True,
        values=[to_yaml(dict(values))],
        atomic=atomic,
        cleanup_on_fail=True,
        wait=wait,
        timeout=timeout,
        **cluster.installed(depends_on),
        set_list=[
            ReleaseSetListStruct(name=path, value=value) for path, value in sorted((set_lists or {}).items())
        ]
        or None,
        set_sensitive=[
            ReleaseSetSensitive(name=path, value=value)
            for path, value in sorted((set_sensitive or {}).items())
        ]
        or None,
    )


@dataclass(frozen=True)
class SensitiveSecret:
    """A Secret the manifests chart renders (templates/secrets.yaml) from sensitive references: its
    data reaches the release through ``set_sensitive`` at ``secrets.<name>.stringData.<key>``, which
    the helm provider cloaks, and is in no values document."""

    name: str
    data: Mapping[str, str]
    """Key -> a reference to a sensitive variable (or another sensitive value)."""
    namespace: str | None = None
    """None: the release's namespace."""
    type: str = "Opaque"

    def __post_init__(self) -> None:
        for what, text in (("secret name", self.name), *(("secret key", key) for key in self.data)):
            if not text or any(char in UNCLOAKABLE for char in text):
                raise ConfigError(
                    what,
                    text,
                    "use one without '.', '[' or ']': it is a segment of a set_sensitive path, "
                    "which the helm provider cannot cloak otherwise",
                )


def manifests_chart_path(scope: Construct) -> str:
    """The stack-relative path of the bundled ``manifests`` chart (one copy per stack)."""
    stack = TerraformStack.of(scope)
    asset = stack.node.try_find_child("manifests-chart")
    if asset is None:
        asset = TerraformAsset(stack, "manifests-chart", path=str(CHART_DIR), type=AssetType.DIRECTORY)
    assert isinstance(asset, TerraformAsset)
    return asset.path


def manifests_release(
    scope: Construct,
    id: str,
    *,
    cluster: GpuCluster,
    name: str,
    namespace: str,
    manifests: Sequence[Mapping[str, Any]],
    depends_on: Sequence[Any] = (),
    wait: bool = True,
    atomic: bool = True,
    set_lists: Mapping[str, Any] | None = None,
    timeout: int = 600,
    secrets: Sequence[SensitiveSecret] = (),
) -> Release:
    """Install ``manifests`` (Kubernetes objects as dicts) as one Helm release.

    The objects are plain data, so tests validate them against the Kubernetes and CRD schemas before
    anything is applied, and Helm gives them an atomic install, upgrade and removal. ``secrets`` are
    Secrets with sensitive data, which cannot be in ``manifests``: a ``set_sensitive`` path into that
    list (``manifests[0].stringData.x``) is left uncloaked by the helm provider.
    """
    values: dict[str, Any] = {"manifests": [dict(manifest) for manifest in manifests]}
    if secrets:
        values["secrets"] = {
            secret.name: {
                "namespace": secret.namespace or namespace,
                "type": secret.type,
                "stringData": {},
            }
            for secret in secrets
        }
    return release(
        scope,
        id,
        cluster=cluster,
        name=name,
        chart=manifests_chart_path(scope),
        namespace=namespace,
        values=values,
        depends_on=depends_on,
        wait=wait,
        atomic=atomic,
        set_lists=set_lists,
        set_sensitive={
            f"secrets.{secret.name}.stringData.{key}": value
            for secret in secrets
            for key, value in secret.data.items()
        }
        or None,
        timeout=timeout,
    )
