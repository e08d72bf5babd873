"""wait-crd.sh, which holds the Fleet GitRepo back until Rancher's Fleet CRD is Established, run
against a stubbed kubectl."""

from __future__ import annotations

from tests.support.host import Host

ENV = {"KUBECONFIG": "/tmp/kubeconfig.yaml", "CRD": "gitrepos.fleet.cattle.io"}


def test_waits_until_the_crd_is_established(host: Host):
    host.stub("sleep", "")
    # absent twice, then present
    host.stub(
        "kubectl",
        'if [ "$1" = get ]; then n=$(cat "$STATE/n" 2>/dev/null || echo 0); echo $((n + 1)) >"$STATE/n"; '
        '[ "$n" -ge 2 ]; fi',
    )
    result = host.run("wait-crd.sh", **ENV, WAIT_SECONDS="60")
    assert result.returncode == 0, result.stderr
    assert host.calls("kubectl get") == ["kubectl get crd gitrepos.fleet.cattle.io"] * 3
    (wait,) = host.calls("kubectl wait")
    assert wait.startswith("kubectl wait --for=condition=Established crd/gitrepos.fleet.cattle.io --timeout=")


def test_fails_clearly_when_the_crd_never_appears(host: Host):
    host.stub("kubectl", "exit 1")
    result = host.run("wait-crd.sh", **ENV, WAIT_SECONDS="0")
    assert result.returncode == 1
    assert "ERROR: CRD gitrepos.fleet.cattle.io does not exist after 0s" in result.stderr


def test_fails_clearly_when_the_crd_is_not_established(host: Host):
    host.stub("kubectl", '[ "$1" = get ]')
    result = host.run("wait-crd.sh", **ENV, WAIT_SECONDS="0")
    assert result.returncode == 1
    assert "exists but is not Established" in result.stderr
