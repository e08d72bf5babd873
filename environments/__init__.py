"""The environments and the instances of them that the app synthesizes, one stack each.

An :class:`Instance` names a stack, the environment it instantiates and the settings it changes from
that environment's defaults. ``main.py`` lists the instances; ``GPU_STACKS`` (a comma-separated list
of stack names) limits a synth to some of them, and only those stacks' modules and providers are
imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpu_constructs import provider_imports

provider_imports.install()  # binds the engine's names before the first engine import

from cdktf import App, Aspects, TerraformStack  # noqa: E402
from cdktf_cdktf_provider_helm.provider import HelmProvider  # noqa: E402

from gpu_constructs.cluster import GpuCluster  # noqa: E402
from gpu_constructs.errors import DEBUG_ENV, ConfigError, did_you_mean  # noqa: E402
from gpu_constructs.policy import StackPolicy  # noqa: E402

# environment name -> (module, stack class, settings class)
ENVIRONMENTS: Mapping[str, tuple[str, str, str]] = {
    "single-node": ("environments.single_node", "SingleNodeStack", "SingleNodeSettings"),
    "eks-karpenter": ("environments.eks_karpenter", "EksKarpenterStack", "EksKarpenterSettings"),
    "k3d-poc": ("environments.k3d_poc", "K3dPocStack", "K3dPocSettings"),
    "lke": ("environments.lke", "LkeStack", "LkeSettings"),
    "proxmox-ha": ("environments.proxmox_ha", "ProxmoxHaStack", "ProxmoxHaSettings"),
}

STACKS_ENV = "GPU_STACKS"


REQUIRED_TERRAFORM = ">= 1.10"
"""The oldest Terraform every stack runs on: a variable validation that reads another variable
(single-node's ``public_address`` with HTTP-01 checks the hosts' addresses: Terraform 1.9), the S3
backend's own lock file ``use_lockfile`` (eks-karpenter: 1.10) and ``terraform_data`` (1.4). An
older Terraform stops at init with this constraint instead of failing half-way through a plan."""


def use_cluster(stack: TerraformStack, cluster: GpuCluster) -> GpuCluster:
    """What every stack does with its cluster first: the policy aspect checks the whole stack
    against the contract, the helm provider reaches the cluster through the contract's access, and
    the stack declares the Terraform it needs."""
    stack.add_override("terraform.required_version", REQUIRED_TERRAFORM)
    Aspects.of(stack).add(StackPolicy(cluster))
    HelmProvider(stack, "helm", kubernetes=cluster.access.helm_kubernetes())
    return cluster


@dataclass(frozen=True)
class Instance:
    """One stack: an environment with its own name, settings, values overlay and state."""

    stack: str
    """The stack name, as users type it: ``cdktf deploy <stack>``."""
    environment: str
    """Which environment this instantiates, a key of ENVIRONMENTS."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Settings that differ from the environment's defaults, by field name."""

    def settings_class(self) -> Any:
        # Checked here, inside synth, rather than when main.py builds its instances: the app's entry
        # point reports it as one line.
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(
                "environment",
                self.environment,
                f"{did_you_mean(self.environment, ENVIRONMENTS)}use one of {', '.join(ENVIRONMENTS)}",
                instance=self.stack,
            )
        module_name, _, settings_name = ENVIRONMENTS[self.environment]
        return getattr(importlib.import_module(module_name), settings_name)

    def settings(self) -> Any:
        """The typed settings: the environment's defaults with ``overrides`` applied and checked.

        A bad setting raises a ConfigError that names this instance and the setting as written in
        ``overrides``."""
        settings_class = self.settings_class()
        known = [f.name for f in dataclasses.fields(settings_class)]
        for key in self.overrides:
            if key not in known:
                raise ConfigError(
                    key,
                    self.overrides[key],
                    f"not a setting of {self.environment}; {did_you_mean(key, known)}"
                    f"the settings are {', '.join(sorted(known))}",
                    instance=self.stack,
                )
        try:
            return settings_class(**self.overrides)
        except ConfigError as error:
            raise error.within(self.stack, settings_class.PROPS_SETTINGS) from error

    def build(self, app: App) -> TerraformStack:
        settings = self.settings()
        module_name, stack_name, _ = ENVIRONMENTS[self.environment]
        stack_class = getattr(importlib.import_module(module_name), stack_name)
        try:
            stack: TerraformStack = stack_class(app, self.stack, settings=settings)
        except ConfigError as error:
            # A construct's props name their own fields: say which setting of this instance it was.
            raise error.within(self.stack, type(settings).PROPS_SETTINGS) from error
        return stack


def selected(instances: Sequence[Instance], requested: str | None) -> list[Instance]:
    """The instances named in ``requested`` (comma-separated), or all of them when it is empty."""
    names = [instance.stack for instance in instances]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ConfigError("stack", duplicate, "each instance needs its own stack name")
    if not requested:
        return list(instances)
    wanted = [name.strip() for name in requested.split(",") if name.strip()]
    for name in wanted:
        if name not in names:
            hint = did_you_mean(name, names)
            raise ConfigError(STACKS_ENV, name, f"{hint}use stack names from main.py: {', '.join(names)}")
    return [instance for instance in instances if instance.stack in wanted]


def synth(instances: Iterable[Instance], app: App | None = None) -> App:
    """Build the selected instances into ``app`` and synthesize them."""
    from environments.k3d_poc import check_instances

    app = app or App()
    instances = list(instances)
    # Over every instance, selected or not: their stacks collide on the same machine either way.
    check_instances(instances)
    for instance in selected(instances, os.environ.get(STACKS_ENV)):
        instance.build(app)
    app.synth()
    return app


def main(instances: Iterable[Instance]) -> int:
    """The app's entry point: synthesize, and report a bad setting as its one line on stderr with
    exit code 2 (the traceback too with ``GPU_CONSTRUCTS_DEBUG=1``)."""
    try:
        synth(instances)
    except ConfigError as error:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
