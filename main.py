"""The cdktf app: one stack per environment instance.

Add an instance to INSTANCES to get another stack of an environment with its own settings, values
overlay and state, e.g. ``Instance("single-node-staging", "single-node", {"environment": "staging"})``.
"""

import sys

from gpu_constructs import provider_imports

# Before the first engine import: binds the engine's names and loads the provider packages lazily
# (importing gpu_constructs does neither).
provider_imports.install()

from environments import Instance, main  # noqa: E402

INSTANCES = (
    Instance("single-node", "single-node"),
    # The Proxmox host's pools as `pvesm status` shows them: the seed's 6.4 TB of disks do not fit
    # one 2 TB pool, so scratch has its own (checked at synth; put your host's here); and the
    # registry of the notebook images.
    Instance(
        "proxmox-ha",
        "proxmox-ha",
        {
            "scratch_datastore": "nvme",
            "datastore_capacity_gb": (("local-lvm", 2400), ("nvme", 4096)),
            # where you push the notebook images of docker/notebook-* (put yours here)
            "notebook_registry": "registry.example.com/ml",
        },
    ),
    Instance("eks-karpenter", "eks-karpenter"),
    Instance("k3d-poc", "k3d-poc"),
    Instance("lke", "lke"),
)

if __name__ == "__main__":
    sys.exit(main(INSTANCES))
