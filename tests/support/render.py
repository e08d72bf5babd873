"""Render every ``helm_release`` of a synthesized stack with real Helm 3 and the chart it pins.

The helm provider (terraform-provider-helm v3, which embeds Helm 3.18) builds a release's values by
merging the ``values`` documents in order with Helm's map merge, then applying ``set``, ``set_list``
and ``set_sensitive`` with Helm's ``strvals.ParseInto`` (``set_list`` as ``name={a,b}``). The Helm
CLI does the same with ``-f`` files in order followed by ``--set`` flags, so a release renders here
exactly as ``helm template -f <doc1> -f <doc2> --set ...`` of the chart at its pinned version, from
``../shared/upstream/charts/<chart>-<version>/`` (the stack's own objects from the bundled
``gpu_constructs/charts/manifests`` chart).

Terraform references in values cannot be known before apply: each ``${...}`` becomes a placeholder
of the right type (a variable's default when it has one, otherwise a value of the variable's type
shaped like what the name says: a host name, an e-mail address, an image, a URL). ``$${`` and
``%%{`` are Terraform's escapes for a literal ``${`` and ``%{``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gpu_constructs.compute.base import NodeGroup, PlatformFacts, compute_of
from gpu_constructs.helm import CHART_DIR

ROOT = Path(__file__).resolve().parents[2]


def upstream_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the upstream charts and schemas are: ``UPSTREAM_DIR`` (relative to the repository root
    unless absolute; tools/fetch-upstream fills it), else ../shared/upstream beside the checkout."""
    value = environ.get("UPSTREAM_DIR")
    if not value:
        return ROOT.parent / "shared" / "upstream"
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


UPSTREAM = upstream_root()
CHARTS = UPSTREAM / "charts"
PROJECT_HELM = ROOT / "tools" / "helm" / "bin" / "helm"


class RenderError(AssertionError):
    """Helm failed to render a release: its own message, with the release it came from."""


@cache
def helm_binary() -> str | None:
    """``helm`` on PATH when it is Helm 3, else the project's own (``make deps``), else None."""
    candidates = [shutil.which("helm"), str(PROJECT_HELM) if PROJECT_HELM.exists() else None]
    for candidate in candidates:
        if candidate is None:
            continue
        result = subprocess.run(
            [candidate, "version", "--short"], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode == 0 and result.stdout.startswith("v3."):
            return candidate
    return None


def kubernetes_version(stack: str, synthesized: dict[str, Any]) -> str:
    """The Kubernetes minor version (``1.35``) the stack's cluster runs, read from the synthesized
    JSON: the EKS cluster's or LKE cluster's version, else the k3s release the hosts, VMs or k3d image
    run. Rendering takes the version from the compute (PlatformFacts); this independent reading is
    what the tests hold it to."""
    resources = synthesized.get("resource", {})
    for kind, attribute in (("aws_eks_cluster", "version"), ("linode_lke_cluster", "k8s_version")):
        for resource in resources.get(kind, {}).values():
            if match := re.fullmatch(r"(1\.\d+)(\.\d+)?", str(resource.get(attribute, ""))):
                return match.group(1)
    k3s = set(re.findall(r"v(1\.\d+)\.\d+[+-]k3s\d+", json.dumps(synthesized)))
    if len(k3s) == 1:
        return k3s.pop()
    raise LookupError(
        f"{stack}: no single Kubernetes version in the stack (k3s releases found: {sorted(k3s)})"
    )


# --- Terraform references -> placeholders -----------------------------------------------------------


def _string_placeholder(name: str) -> str:
    lowered = name.lower()
    if "cidr" in lowered:
        return "192.0.2.0/24"
    if "email" in lowered:
        return "ops@example.com"
    if "domain" in lowered or "hostname" in lowered or lowered.endswith("host"):
        return "placeholder.example.com"
    if "image" in lowered:
        return "registry.example.com/placeholder:1.0.0"
    if "url" in lowered:
        return "https://git.example.com/placeholder.git"
    if lowered.endswith("arn"):
        return "arn:aws:acm:eu-west-1:123456789012:certificate/placeholder"
    if "branch" in lowered:
        return "main"
    return "placeholder"


def placeholder(reference: str, variables: dict[str, Any]) -> Any:
    """A value of the right type for one Terraform expression."""
    if match := re.fullmatch(r"jsonencode\((.*)\)", reference):
        return json.dumps(placeholder(match.group(1), variables))
    if match := re.fullmatch(r"var\.([A-Za-z0-9_-]+)", reference):
        variable = variables.get(match.group(1), {})
        if "default" in variable and variable["default"] is not None:
            return variable["default"]
        kind = str(variable.get("type", "string"))
        if kind.startswith(("list", "set", "tuple")):
            return [_string_placeholder(match.group(1))]
        if kind == "number":
            return 1
        if kind == "bool":
            return True
        return _string_placeholder(match.group(1))
    return _string_placeholder(reference.rsplit(".", 1)[-1])


_REFERENCE = re.compile(r"(\$\$\{|%%\{|\$\{([^}]*)\})")


def resolve_template(text: str, variables: dict[str, Any]) -> str:
    """A Terraform string with each ``${ref}`` replaced by its placeholder and escapes undone."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$${":
            return "${"
        if match.group(1) == "%%{":
            return "%{"
        value = placeholder(match.group(2), variables)
        return value if isinstance(value, str) else json.dumps(value)

    return _REFERENCE.sub(replace, text)


def resolve_value(value: Any, variables: dict[str, Any]) -> Any:
    """A ``set``/``set_list`` value: a whole reference keeps its type, a string is templated."""
    if isinstance(value, str) and (match := re.fullmatch(r"\$\{([^}]*)\}", value)):
        return placeholder(match.group(1), variables)
    if isinstance(value, str):
        return resolve_template(value, variables)
    if isinstance(value, list):
        resolved: list[Any] = []
        for item in value:
            item = resolve_value(item, variables)
            resolved.extend(item if isinstance(item, list) else [item])
        return resolved
    return value


def _strval(value: Any) -> str:
    """A scalar as the provider passes it to strvals: verbatim, no escaping (getValue and
    getListValue in terraform-provider-helm v3.1.1 helm/resource_helm_release.go format
    ``name=value`` and ``name={a,b}`` and call strvals.ParseInto, as ``helm --set`` does)."""
    return value if isinstance(value, str) else json.dumps(value)


# --- Releases ------------------------------------------------------------------------------------------


@dataclass
class Release:
    """One helm_release of a stack, as the helm provider would install it, and what Helm renders."""

    stack: str
    logical_id: str
    name: str
    namespace: str
    chart: str
    version: str | None
    chart_dir: Path
    values_documents: list[str]
    set_args: list[str]
    depends_on: list[str]
    create_namespace: bool
    raw: dict[str, Any] = field(repr=False)
    objects: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        return f"helm_release.{self.logical_id}"

    @property
    def is_manifests_chart(self) -> bool:
        return self.chart_dir == CHART_DIR

    def values(self) -> dict[str, Any]:
        """The user-supplied values after the documents merge (``set`` flags not applied)."""
        from gpu_constructs.helm import deep_merge

        merged: dict[str, Any] = {}
        for document in self.values_documents:
            merged = deep_merge(merged, yaml.safe_load(document) or {})
        return merged


def chart_dir(chart: str, version: str | None) -> Path:
    """Where the pinned chart lives: the bundled manifests chart, or ../shared/upstream/charts."""
    if "manifests-chart" in chart:
        return CHART_DIR
    if chart.startswith((".", "/")):
        return ROOT / chart
    return CHARTS / f"{chart}-{version}"


def releases_of(stack: str, synthesized: dict[str, Any]) -> list[Release]:
    """Every helm_release of a synthesized stack, with its values as the helm provider builds them."""
    variables = synthesized.get("variable", {})
    found = []
    for logical_id, raw in sorted(synthesized.get("resource", {}).get("helm_release", {}).items()):
        documents = [resolve_template(document, variables) for document in raw.get("values", [])]
        set_args: list[str] = []
        for block in ("set", "set_list", "set_sensitive"):
            for entry in raw.get(block, []):
                if entry.get("type", "auto") not in ("auto", ""):
                    raise NotImplementedError(f"{logical_id}: set type {entry['type']!r}")
                value = resolve_value(entry["value"], variables)
                if block == "set_list":
                    items = value if isinstance(value, list) else [value]
                    set_args += ["--set", f"{entry['name']}={{{','.join(_strval(v) for v in items)}}}"]
                else:
                    set_args += ["--set", f"{entry['name']}={_strval(value)}"]
        found.append(
            Release(
                stack=stack,
                logical_id=logical_id,
                name=raw["name"],
                namespace=raw.get("namespace", "default"),
                chart=raw["chart"],
                version=raw.get("version"),
                chart_dir=chart_dir(raw["chart"], raw.get("version")),
                values_documents=documents,
                set_args=set_args,
                depends_on=list(raw.get("depends_on", [])),
                create_namespace=bool(raw.get("create_namespace", False)),
                raw=raw,
            )
        )
    return found


def helm_template(release: Release, kube_version: str, api_versions: list[str], helm: str) -> str:
    """``helm template`` of one release; Helm's own error message on failure."""
    if not release.chart_dir.is_dir():
        raise RenderError(
            f"{release.stack}/{release.address}: chart {release.chart} {release.version} is not in "
            f"{CHARTS}; add it there (see its README) to render this release"
        )
    with tempfile.TemporaryDirectory(prefix="render-") as workdir:
        files = []
        for index, document in enumerate(release.values_documents):
            path = Path(workdir) / f"values-{index}.yaml"
            path.write_text(document, encoding="utf-8")
            files += ["-f", str(path)]
        command = [
            helm,
            "template",
            release.name,
            str(release.chart_dir),
            "--namespace",
            release.namespace,
            "--kube-version",
            kube_version,
            # The helm provider's skip_crds leaves the chart's crds/ out of the install, as here.
            *([] if release.raw.get("skip_crds") else ["--include-crds"]),
            *(f"--api-versions={api}" for api in api_versions),
            *files,
            *release.set_args,
        ]
        env = {
            **os.environ,
            "HELM_CACHE_HOME": workdir,
            "HELM_CONFIG_HOME": workdir,
            "HELM_DATA_HOME": workdir,
        }
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)
    if result.returncode != 0:
        raise RenderError(f"{release.stack}/{release.address} ({release.chart}): {result.stderr.strip()}")
    return result.stdout


class _Loader(yaml.CSafeLoader):
    """YAML 1.1 as Kubernetes reads it (sigs.k8s.io/yaml, go-yaml): PyYAML alone resolves a plain
    ``=`` to its ``tag:yaml.org,2002:value`` and then has no constructor for it (the Prometheus
    Operator CRDs list ``=`` among label-matcher operators); go-yaml reads it as the string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def parse_objects(text: str) -> list[dict[str, Any]]:
    """The objects of Helm's output; a ``v1`` ``List`` becomes its items, as Helm's resource builder
    flattens it before it applies anything."""
    objects: list[dict[str, Any]] = []
    for document in yaml.load_all(text, Loader=_Loader):
        if not isinstance(document, dict) or not document:
            continue
        if document.get("apiVersion") == "v1" and document.get("kind") == "List":
            objects += [item for item in document.get("items") or [] if item]
        else:
            objects.append(document)
    return objects


# API groups/versions whose CRDs a stack installs: passed as --api-versions so charts that gate on
# .Capabilities.APIVersions render what they would render on the real cluster.
def crd_api_versions(objects: list[dict[str, Any]]) -> list[str]:
    versions = set()
    for obj in objects:
        if obj.get("kind") == "CustomResourceDefinition":
            spec = obj["spec"]
            for version in spec.get("versions", []):
                versions.add(f"{spec['group']}/{version['name']}")
                versions.add(f"{spec['group']}/{version['name']}/{spec['names']['kind']}")
    return sorted(versions)


@dataclass
class RenderedStack:
    stack: str
    kube_version: str
    synthesized: dict[str, Any]
    releases: list[Release]
    node_groups: tuple[NodeGroup, ...] = ()
    """The node groups the stack's GpuCompute says it creates."""
    platform: PlatformFacts | None = None
    """What the cluster has before any release, as the stack's GpuCompute says."""

    def objects(self) -> Iterator[tuple[Release, dict[str, Any]]]:
        for release in self.releases:
            for obj in release.objects:
                yield release, obj

    def release(self, logical_id: str) -> Release:
        (found,) = [r for r in self.releases if r.logical_id == logical_id]
        return found


def chart_crd_api_versions(releases: list[Release]) -> list[str]:
    """The API versions of the CRDs the stack's charts ship in ``crds/``: passed as
    ``--api-versions`` so charts that gate on ``.Capabilities.APIVersions`` render what they would
    on the cluster once those CRDs are installed (CRDs a chart ships in its templates, such as
    cert-manager's, are gated by values instead)."""
    crds = []
    for release in releases:
        crd_dir = release.chart_dir / "crds"
        if crd_dir.is_dir():
            for path in sorted(crd_dir.rglob("*.yaml")):
                crds += parse_objects(path.read_text(encoding="utf-8"))
    return crd_api_versions([crd for crd in crds if crd.get("kind") == "CustomResourceDefinition"])


# Kinds in the OpenAPI definitions that are not served resources
PSEUDO_KINDS = {
    "DeleteOptions",
    "WatchEvent",
    "Status",
    "APIGroup",
    "APIGroupList",
    "APIResourceList",
    "APIVersions",
}


@cache
def builtin_api_versions(kube_version: str) -> tuple[str, ...]:
    """The GA built-in APIs of the cluster's Kubernetes version (``resource.k8s.io/v1/DeviceClass``
    from 1.34), from the OpenAPI definitions kubernetes-validate ships for it. Helm's own list is
    that of the client-go it was built with (1.33 for Helm 3.18); GA APIs are always served, beta
    and alpha ones only when enabled, so those are left out."""
    from kubernetes_validate import utils

    wanted = utils.major_minor(kube_version)
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted][-1]
    definitions = utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", kube_version
    )
    found = set()
    for definition in definitions.get("$defs", {}).values():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            if re.fullmatch(r"v\d+", gvk["version"]) and gvk["kind"] not in PSEUDO_KINDS:
                group_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
                found |= {group_version, f"{group_version}/{gvk['kind']}"}
    return tuple(sorted(found))


def render_stack(
    stack: str,
    synthesized: dict[str, Any],
    kube_version: str,
    helm: str,
    node_groups: tuple[NodeGroup, ...] = (),
    platform: PlatformFacts | None = None,
) -> RenderedStack:
    """Render every release of a stack (two at a time: the machine is shared)."""
    releases = releases_of(stack, synthesized)
    api_versions = [*builtin_api_versions(kube_version), *chart_crd_api_versions(releases)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outputs = list(pool.map(lambda r: helm_template(r, kube_version, api_versions, helm), releases))
    for release, text in zip(releases, outputs, strict=True):
        release.objects = parse_objects(text)
    return RenderedStack(stack, kube_version, synthesized, releases, node_groups, platform)


_CACHE: dict[str, RenderedStack] = {}


def rendered(instance: Any) -> RenderedStack:
    """The rendered stack of a main.py instance, once per test session."""
    if instance.stack not in _CACHE:
        import cdktf

        helm = helm_binary()
        if helm is None:
            raise RenderError("no Helm 3: run `make deps` (tools/helm/bin/helm) or put helm v3 on PATH")
        _CACHE[instance.stack] = render_built(instance.stack, instance.build(cdktf.Testing.app()), helm)
    return _CACHE[instance.stack]


def render_built(name: str, stack: Any, helm: str) -> RenderedStack:
    """Render a built stack: its synthesized releases at the Kubernetes version its GpuCompute runs,
    with the compute's node groups and platform facts."""
    import cdktf

    compute = compute_of(stack)
    synthesized = json.loads(cdktf.Testing.synth(stack))
    platform = compute.platform
    return render_stack(name, synthesized, platform.kubernetes_minor, helm, compute.node_groups, platform)


def render_release(
    synthesized: dict[str, Any], name: str, kube_version: str = "1.35"
) -> list[dict[str, Any]]:
    """The objects Helm renders for the one ``helm_release`` called ``name`` of a synthesized stack
    (a construct's test stack), with the built-in APIs and its chart's own CRDs."""
    helm = helm_binary()
    if helm is None:
        raise RenderError("no Helm 3: run `make deps` (tools/helm/bin/helm) or put helm v3 on PATH")
    (release,) = [r for r in releases_of("test", synthesized) if r.name == name]
    api_versions = [*builtin_api_versions(kube_version), *chart_crd_api_versions([release])]
    return parse_objects(helm_template(release, kube_version, api_versions, helm))
