"""Every helm_release of every stack in main.py rendered by real Helm 3 with the chart it pins.

A template error or a values-schema rejection fails with Helm's own message (tests/support/render.py).
"""

from __future__ import annotations

import re

import pytest

from tests.support import render
from tests.support.stacks import INSTANCES


def test_every_release_renders_with_its_pinned_chart(rendered_stack):
    stack = rendered_stack
    assert stack.releases
    for release in stack.releases:
        assert release.objects, f"{release.address} renders nothing"


def test_traefik_redirects_http_to_https(helm, upstream):
    for name in ("single-node", "proxmox-ha"):
        (traefik,) = [r for r in render.rendered(INSTANCES[name]).releases if r.chart == "traefik"]
        (deployment,) = [o for o in traefik.objects if o["kind"] == "Deployment"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--entryPoints.web.http.redirections.entryPoint.to=:443" in args
        assert "--entryPoints.web.http.redirections.entryPoint.scheme=https" in args


def test_a_chart_that_fails_to_template_fails_with_helms_message(helm, upstream, tmp_path):
    chart = tmp_path / "broken"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\ndata: {{ .Values.missing.key }}\n")
    release = render.Release(
        stack="test",
        logical_id="broken",
        name="broken",
        namespace="default",
        chart="broken",
        version="0.1.0",
        chart_dir=chart,
        values_documents=[],
        set_args=[],
        depends_on=[],
        create_namespace=False,
        raw={},
    )
    with pytest.raises(render.RenderError, match=re.escape("nil pointer evaluating interface {}.key")):
        render.helm_template(release, "1.35", [], helm)


def test_a_values_key_the_chart_schema_rejects_fails_with_helms_message(helm, upstream):
    (traefik,) = [r for r in render.rendered(INSTANCES["single-node"]).releases if r.chart == "traefik"]
    broken = render.Release(
        **{**traefik.__dict__, "values_documents": ["ports:\n  web:\n    redirect: {}\n"]}
    )
    with pytest.raises(
        render.RenderError, match=re.escape("ports.web: Additional property redirect is not allowed")
    ):
        render.helm_template(broken, "1.35", [], helm)


def test_set_list_and_references_become_typed_placeholders():
    synthesized = {
        "variable": {"paths": {"type": "list(string)"}, "host": {"type": "string"}},
        "resource": {
            "helm_release": {
                "r": {
                    "name": "r",
                    "chart": "c",
                    "version": "1",
                    "values": ["a: ${var.host}\nb: $${literal}\n"],
                    "set_list": [{"name": "x[0].paths", "value": "${var.paths}"}],
                    "set": [{"name": "y", "value": "a,b"}],
                }
            }
        },
    }
    (release,) = render.releases_of("test", synthesized)
    assert release.values() == {"a": "placeholder.example.com", "b": "${literal}"}
    # verbatim, as the provider hands them to strvals: a comma in a set value splits it there too
    assert release.set_args == ["--set", "y=a,b", "--set", "x[0].paths={placeholder}"]


def test_the_clusters_built_in_apis_are_known_to_the_render():
    """Charts gating on .Capabilities see the stack's Kubernetes version, not Helm's built-in list."""
    assert "resource.k8s.io/v1/DeviceClass" in render.builtin_api_versions("1.34")
    assert "resource.k8s.io/v1/DeviceClass" not in render.builtin_api_versions("1.33")
    assert "apps/v1/Deployment" in render.builtin_api_versions("1.33")
    assert not [api for api in render.builtin_api_versions("1.35") if "beta" in api or "alpha" in api]
