"""EC2 vCPU quotas of the GPU node pools, read at plan.

A new AWS account may launch no G or P instance at all: the quotas below are vCPUs per region, and
their default is 0 on new accounts (EC2 user guide, "Spot Instance quotas": default 0 for "All G and
VT Spot Instance Requests" and the P ones; "On-Demand Instance quotas" for the running ones). Karpenter
would then fail every launch at runtime (``VcpuLimitExceeded`` / ``MaxSpotInstanceCountExceeded``)
and the workload would wait at zero for ever. Each quota the GPU pools draw on is read with the
``aws_servicequotas_service_quota`` data source, and a postcondition refuses the plan when it does not
cover the largest instance a pool may launch, naming the quota to request. The data source's
``value`` is the account's applied quota, or the default where none was ever applied
(hashicorp/terraform-provider-aws internal/service/servicequotas/service_quota_data_source.go reads
GetAWSDefaultServiceQuota, then GetServiceQuota, which answers NoSuchResource for an unchanged quota).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cdktf import Postcondition, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.data_aws_servicequotas_service_quota import DataAwsServicequotasServiceQuota
from constructs import Construct

from gpu_constructs.compute.eks.nodepools import INSTANCE_FAMILIES, NodePoolSpec

QUOTA_CLASS = {"g4dn": "G", "g5": "G", "g6": "G", "g6e": "G", "p3": "P", "p4d": "P", "p5": "P"}
"""The EC2 quota class of each GPU family: G and VT instances share one quota, P instances another."""

QUOTAS: dict[tuple[str, str], tuple[str, str]] = {
    ("G", "on-demand"): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("P", "on-demand"): ("L-417A185B", "Running On-Demand P instances"),
    ("G", "spot"): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", "spot"): ("L-7212CCBC", "All P Spot Instance Requests"),
}
"""Service Quotas codes (service ``ec2``) of the vCPU quotas, by quota class and capacity type. The
names are EC2's (user guide, "On-Demand Instance quotas" and "Spot Instance quotas"; the latter now
lists the P spot quota as "All P4, P3 and P2 Spot Instance Requests", P5 apart). The user guides
name no codes: these are the ones the Service Quotas console and API give those names
(``aws service-quotas list-service-quotas --service-code ec2``), as public tooling that reads them
uses them too. p5's spot quota is not read: no size in nodepools.SIZES is a p5 size."""

GPU_VCPUS: dict[str, dict[str, int]] = {
    "g4dn": {"xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64},
    "g5": {"xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64},
    "g6": {"xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64},
    "g6e": {"xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64},
    "p3": {"2xlarge": 8, "8xlarge": 32, "16xlarge": 64},
    "p4d": {},
    "p5": {},
}
"""vCPUs of each GPU instance type whose size is in nodepools.SIZES (EC2 "Accelerated computing
instance specifications"; p4d and p5 come only as 24xlarge and 48xlarge). A size missing here does
not exist in that family, and Karpenter launches none."""

assert set(GPU_VCPUS) == set(QUOTA_CLASS) == {f for f, gpu in INSTANCE_FAMILIES.items() if gpu}


@dataclass(frozen=True)
class QuotaNeed:
    """One quota the GPU pools draw on, and the largest instance that must fit in it."""

    code: str
    name: str
    capacity_type: str
    vcpus: int
    instance_type: str
    pool: str


def quota_needs(pools: Iterable[NodePoolSpec]) -> list[QuotaNeed]:
    """For each quota a GPU pool launches under, the pool's largest instance: a quota smaller than
    its vCPUs lets Karpenter launch none of it. Pools with both capacity types need both quotas:
    Karpenter falls back to on-demand when spot has no capacity (or no quota)."""
    needs: dict[tuple[str, str], QuotaNeed] = {}
    for pool in pools:
        for capacity in pool.capacity_types:
            for family in pool.families:
                if family not in QUOTA_CLASS:
                    continue
                code, name = QUOTAS[(QUOTA_CLASS[family], capacity)]
                for size in pool.sizes:
                    vcpus = GPU_VCPUS[family].get(size)
                    if vcpus is None:
                        continue
                    known = needs.get((code, capacity))
                    if known is None or vcpus > known.vcpus:
                        needs[(code, capacity)] = QuotaNeed(
                            code, name, capacity, vcpus, f"{family}.{size}", pool.name
                        )
    return sorted(needs.values(), key=lambda n: n.code)


class GpuQuotaCheck(Construct):
    """One ``aws_servicequotas_service_quota`` data source per quota the GPU pools draw on, each
    with a postcondition that the quota covers the pool's largest instance: read at every plan, so
    a plan in a region whose quota is too small stops before anything is created."""

    def __init__(self, scope: Construct, id: str, *, pools: Iterable[NodePoolSpec], region: str) -> None:
        super().__init__(scope, id)
        self.needs = quota_needs(pools)
        self.quotas = [
            DataAwsServicequotasServiceQuota(
                self,
                need.code,
                service_code="ec2",
                quota_code=need.code,
                lifecycle=TerraformResourceLifecycle(
                    postcondition=[
                        Postcondition(
                            condition=f"${{self.value >= {need.vcpus}}}",
                            error_message=(
                                f'EC2 quota "{need.name}" ({need.code}) in {region} is ${{self.value}} '
                                f"vCPUs; node pool {need.pool} launches {need.capacity_type} "
                                f"{need.instance_type} ({need.vcpus} vCPUs). Request at least "
                                f"{need.vcpus} in the Service Quotas console (Amazon EC2, {need.code}, "
                                f"region {region}) and plan again, or drop {need.capacity_type} from "
                                f"the pool's capacity_types."
                            ),
                        )
                    ]
                ),
            )
            for need in self.needs
        ]
