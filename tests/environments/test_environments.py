"""Instances of environments: settings overrides, stack selection and settings validation."""

from __future__ import annotations

import pytest

from environments import Instance, selected
from environments.single_node import SingleNodeSettings
from gpu_constructs.errors import ConfigError


def test_an_instance_overrides_settings_without_touching_library_code():
    staging = Instance("single-node-staging", "single-node", {"environment": "staging", "vault_ha": True})
    settings = staging.settings()
    assert isinstance(settings, SingleNodeSettings)
    assert (settings.environment, settings.vault_ha) == ("staging", True)
    assert settings.k3s_version == SingleNodeSettings().k3s_version


def test_an_unknown_override_names_the_valid_fields():
    with pytest.raises(
        ConfigError,
        match=r"^single-node: 'gpu_count' is 2: not a setting of single-node; did you mean 'agent_count'\? "
        r"the settings are agent_count, app_gpus,",
    ):
        Instance("single-node", "single-node", {"gpu_count": 2}).settings()


def test_an_unknown_environment():
    with pytest.raises(
        ConfigError,
        match=r"^x: 'environment' is 'single_node': did you mean 'single-node'\? use one of single-node",
    ):
        Instance("x", "single_node").settings()


def test_stack_names_must_be_unique():
    with pytest.raises(ConfigError, match=r"'stack' is 'a': each instance needs its own stack name"):
        selected([Instance("a", "single-node"), Instance("a", "single-node")], None)


def test_selection_by_name():
    instances = [Instance("a", "single-node"), Instance("b", "single-node")]
    assert [i.stack for i in selected(instances, "b")] == ["b"]
    assert [i.stack for i in selected(instances, "")] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"'GPU_STACKS' is 'c': use stack names from main.py: a, b"):
        selected(instances, "a,c")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"environment": "prod"}, r"'environment' is 'prod': use one of dev, staging, production"),
        ({"agent_count": -1}, r"'agent_count' is -1"),
        ({"mig_strategy": "all"}, r"'mig_strategy' is 'all': use one of none, single, mixed"),
        ({"gpu_enabled": False}, r"'app_gpus' is 1: gpu_enabled is False, so set app_gpus=0"),
        ({"time_slicing_replicas": 0}, r"'time_slicing_replicas' is 0"),
        ({"nvidia_driver_version": "545.29"}, r"'nvidia_driver_version' is '545.29'"),
        ({"vault_ha": True, "vault_replicas": 2}, r"'vault_replicas' is 2: Vault raft needs an odd count"),
        ({"backup_schedule": "0 2 * *"}, r"'backup_schedule' is '0 2 \* \*'"),
    ],
)
def test_bad_settings_fail_at_synth(overrides, message):
    from cdktf import Testing

    with pytest.raises(ConfigError, match=message):
        Instance("single-node", "single-node", overrides).build(Testing.app())
