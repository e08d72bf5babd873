"""GPU Kubernetes infrastructure as cdktf constructs.

The GPU cluster contract (:mod:`gpu_constructs.cluster`) ties the library together: every GpuCompute
produces a :class:`GpuCluster`, and GpuOperator and AppChart consume it.

Importing the package has no side effects: the names below are imported on first use, so an app can
``from gpu_constructs import provider_imports`` and call ``provider_imports.install()`` before the
first cdktf import (see :mod:`gpu_constructs.provider_imports`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu_constructs.app_chart import AppChart, AppChartProps
    from gpu_constructs.cluster import GpuCluster, GpuSharing, KubeAccess, Manager, MigStrategy, Taint
    from gpu_constructs.compute import K3sHostGpuCompute, K3sHostProps
    from gpu_constructs.database import Postgres, PostgresProps
    from gpu_constructs.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginProps
    from gpu_constructs.errors import ConfigError
    from gpu_constructs.existing import existing_cluster
    from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
    from gpu_constructs.helm import ValuesLayers
    from gpu_constructs.hostexec import SshHost
    from gpu_constructs.networking import Networking, NetworkingProps
    from gpu_constructs.storage import Storage, StorageProps, StorageTier
    from gpu_constructs.vault import Vault, VaultProps

_EXPORTS = {
    "AppChart": "gpu_constructs.app_chart",
    "AppChartProps": "gpu_constructs.app_chart",
    "ConfigError": "gpu_constructs.errors",
    "existing_cluster": "gpu_constructs.existing",
    "GpuCluster": "gpu_constructs.cluster",
    "GpuOperator": "gpu_constructs.gpu_operator",
    "GpuOperatorProps": "gpu_constructs.gpu_operator",
    "GpuSharing": "gpu_constructs.cluster",
    "K3sHostGpuCompute": "gpu_constructs.compute",
    "K3sHostProps": "gpu_constructs.compute",
    "KubeAccess": "gpu_constructs.cluster",
    "Manager": "gpu_constructs.cluster",
    "MigStrategy": "gpu_constructs.cluster",
    "Networking": "gpu_constructs.networking",
    "NvidiaDevicePlugin": "gpu_constructs.device_plugin",
    "NvidiaDevicePluginProps": "gpu_constructs.device_plugin",
    "NetworkingProps": "gpu_constructs.networking",
    "Postgres": "gpu_constructs.database",
    "PostgresProps": "gpu_constructs.database",
    "SshHost": "gpu_constructs.hostexec",
    "Storage": "gpu_constructs.storage",
    "StorageProps": "gpu_constructs.storage",
    "StorageTier": "gpu_constructs.storage",
    "Taint": "gpu_constructs.cluster",
    "ValuesLayers": "gpu_constructs.helm",
    "Vault": "gpu_constructs.vault",
    "VaultProps": "gpu_constructs.vault",
}
"""Exported name -> the module that defines it, imported when the name is first used."""

__all__ = [
    "AppChart",
    "AppChartProps",
    "ConfigError",
    "GpuCluster",
    "GpuOperator",
    "GpuOperatorProps",
    "GpuSharing",
    "K3sHostGpuCompute",
    "K3sHostProps",
    "KubeAccess",
    "Manager",
    "MigStrategy",
    "Networking",
    "NetworkingProps",
    "NvidiaDevicePlugin",
    "NvidiaDevicePluginProps",
    "Postgres",
    "PostgresProps",
    "SshHost",
    "Storage",
    "StorageProps",
    "StorageTier",
    "Taint",
    "ValuesLayers",
    "Vault",
    "VaultProps",
    "existing_cluster",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
