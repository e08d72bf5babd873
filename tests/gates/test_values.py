"""No dead values: every key a release sets is one its chart knows, by default or by schema.

A key counts as known when the chart's (or its subchart's) default values have it, its
``values.schema.json`` declares it, or a template reads it (``.Values.hostname``: charts document
some keys only in a comment of values.yaml). Maps whose default is empty and that the schema leaves open are
free-form (labels, annotations, ``extraEnv``...), and list items are not descended into. A typo is
otherwise silently ignored by Helm: the chart renders exactly as if the key were absent.
"""

from __future__ import annotations

from tests.support import render
from tests.support.stacks import INSTANCES
from tests.support.values import release_dead_keys


def test_every_values_key_is_known_to_its_chart(rendered_stack):
    stack = rendered_stack
    problems = {
        f"{release.address} ({release.chart})": keys
        for release in stack.releases
        if (keys := release_dead_keys(release))
    }
    assert problems == {}


def test_an_unknown_values_key_fails(helm, upstream):
    for name, chart, typo, expected in (
        ("single-node", "vault", "server:\n  standalon:\n    enabled: true\n", "server.standalon"),
        ("single-node", "gpu-operator", "dcgmExporter:\n  enable: true\n", "dcgmExporter.enable"),
        ("proxmox-ha", "rancher", "hostnme: x.example.com\n", "hostnme"),
        ("single-node", "cloudnative-pg", "crds:\n  craete: true\n", "crds.craete"),
    ):
        (release,) = [r for r in render.rendered(INSTANCES[name]).releases if r.chart == chart]
        broken = render.Release(**{**release.__dict__, "values_documents": [*release.values_documents, typo]})
        assert expected in release_dead_keys(broken), (chart, release_dead_keys(broken))


def test_free_form_maps_are_not_flagged(helm, upstream):
    (traefik,) = [r for r in render.rendered(INSTANCES["single-node"]).releases if r.chart == "traefik"]
    extra = "deployment:\n  podAnnotations:\n    example.com/anything: 'yes'\n"
    broken = render.Release(**{**traefik.__dict__, "values_documents": [*traefik.values_documents, extra]})
    assert release_dead_keys(broken) == []
