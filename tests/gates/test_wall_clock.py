"""Synth does not read the clock; the EKS support window is checked at plan against the real date."""

from __future__ import annotations

import datetime as real_datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import cdktf
import pytest

from environments import Instance
from gpu_constructs import versions
from gpu_constructs.compute.eks import support_check
from tests.conftest import terraform_binary

ROOT = Path(__file__).resolve().parents[2]
FUTURE = real_datetime.datetime(2099, 6, 1, 12, 0, 0, tzinfo=real_datetime.UTC)
CLOCK_CALLS = re.compile(
    r"\b(date\.today|datetime\.(now|utcnow|today)|time\.(time|time_ns|localtime|gmtime))\("
)


def synth_all() -> dict[str, str]:
    import main

    return {i.stack: cdktf.Testing.synth(i.build(cdktf.Testing.app())) for i in main.INSTANCES}


class FutureDate(real_datetime.date):
    @classmethod
    def today(cls):  # type: ignore[override]
        return cls(FUTURE.year, FUTURE.month, FUTURE.day)


class FutureDateTime(real_datetime.datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return cls.fromtimestamp(FUTURE.timestamp(), tz)

    @classmethod
    def utcnow(cls):  # type: ignore[override]
        return cls.fromtimestamp(FUTURE.timestamp())

    today = now  # type: ignore[assignment]


def test_every_stack_synthesizes_the_same_on_a_date_far_in_the_future(monkeypatch):
    today = synth_all()
    monkeypatch.setattr(real_datetime, "date", FutureDate)
    monkeypatch.setattr(real_datetime, "datetime", FutureDateTime)
    monkeypatch.setattr(time, "time", FUTURE.timestamp)
    monkeypatch.setattr(time, "time_ns", lambda: int(FUTURE.timestamp() * 1e9))
    # Modules that imported the names themselves (from datetime import date) get the future too.
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("gpu_constructs", "environments", "main"):
            for attribute, fake in (("date", FutureDate), ("datetime", FutureDateTime)):
                if getattr(module, attribute, None) in (FutureDate.__mro__[1], FutureDateTime.__mro__[1]):
                    monkeypatch.setattr(module, attribute, fake)
    assert real_datetime.date.today().year == 2099
    assert synth_all() == today


def test_synth_code_reads_no_clock():
    # gpu_constructs/verify runs against a live cluster after deploy, where timing is the point.
    sources = [
        p
        for folder in ("gpu_constructs", "environments")
        for p in (ROOT / folder).rglob("*.py")
        if "verify" not in p.relative_to(ROOT).parts
    ]
    calls = [
        f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources for m in CLOCK_CALLS.finditer(p.read_text())
    ]
    assert calls == []


def test_the_eks_stack_checks_its_version_against_the_date_of_each_plan():
    stack = json.loads(
        cdktf.Testing.synth(Instance("eks-karpenter", "eks-karpenter").build(cdktf.Testing.app()))
    )
    version = versions.EKS_KUBERNETES.version
    until = versions.EKS_SUPPORT[version].standard_until
    (name,) = stack["check"]
    assert stack["check"][name]["assert"][0]["condition"] == (
        f"${{timecmp(plantimestamp(), local.{name}_ends) < 0}}"
    )
    assert stack["locals"][f"{name}_ends"] == f"{until.isoformat()}T00:00:00Z"
    extended = support_check(cdktf.TerraformStack(cdktf.Testing.app(), "s"), version, extended_support=True)
    assert list(extended["locals"].values()) == [
        f"{versions.EKS_SUPPORT[version].extended_until.isoformat()}T00:00:00Z"
    ]


def plan(directory: Path, config: dict) -> subprocess.CompletedProcess[str]:
    """terraform validate, then plan, of ``config`` alone (no provider, no state)."""
    terraform = terraform_binary()
    (directory / "main.tf.json").write_text(json.dumps(config))
    env = {
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory),
    }
    subprocess.run(
        [terraform, "init", "-backend=false", "-input=false"],
        cwd=directory,
        check=True,
        env=env,
        capture_output=True,
    )
    validated = subprocess.run(
        [terraform, "validate", "-no-color"], cwd=directory, env=env, capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    return subprocess.run(
        [terraform, "plan", "-input=false", "-no-color", "-lock=false"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("version", "expired"), [("1.28", True), (versions.EKS_KUBERNETES.version, False)])
def test_terraform_accepts_the_check_and_warns_only_past_the_end_of_support(tmp_path, version, expired):
    if not expired and versions.EKS_SUPPORT[version].standard_until <= real_datetime.date.today():
        pytest.skip("the pinned version has left standard support: move EKS_KUBERNETES")
    stack = cdktf.TerraformStack(cdktf.Testing.app(), "s")
    done = plan(tmp_path, support_check(stack, version))
    assert done.returncode == 0, done.stdout + done.stderr
    warned = "Check block assertion failed" in done.stdout + done.stderr
    assert warned == expired, done.stdout + done.stderr
    if expired:
        assert f"Kubernetes {version} leaves EKS standard support on" in done.stdout + done.stderr
