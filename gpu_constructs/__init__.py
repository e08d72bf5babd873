"""GPU Kubernetes infrastructure as cdktf constructs.

The GPU cluster contract (:mod:`gpu_constructs.cluster`) ties the library together: every GpuCompute
produces a :class:`GpuCluster`, and GpuOperator and AppChart consume it.
"""

from gpu_constructs import provider_imports

provider_imports.install()

from gpu_constructs.app_chart import AppChart, AppChartProps  # noqa: E402
from gpu_constructs.cluster import GpuCluster, GpuSharing, KubeAccess, Manager, MigStrategy, Taint  # noqa: E402
from gpu_constructs.compute import K3sHostGpuCompute, K3sHostProps  # noqa: E402
from gpu_constructs.database import Postgres, PostgresProps  # noqa: E402
from gpu_constructs.errors import ConfigError  # noqa: E402
from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps  # noqa: E402
from gpu_constructs.helm import ValuesLayers  # noqa: E402
from gpu_constructs.hostexec import SshHost  # noqa: E402
from gpu_constructs.networking import Networking, NetworkingProps  # noqa: E402
from gpu_constructs.storage import Storage, StorageProps, StorageTier  # noqa: E402
from gpu_constructs.vault import Vault, VaultProps  # noqa: E402

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
]
