"""AwsVpc: a VPC for an EKS cluster, as aws-cdk's ``ec2.Vpc`` lays one out: a private and a public
subnet in each zone, NAT gateways, the internet gateway, routes and flow logs."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cdktf import TerraformResource
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.default_security_group import DefaultSecurityGroup
from cdktf_cdktf_provider_aws.eip import Eip
from cdktf_cdktf_provider_aws.flow_log import FlowLog
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.internet_gateway import InternetGateway
from cdktf_cdktf_provider_aws.nat_gateway import NatGateway
from cdktf_cdktf_provider_aws.route_table import RouteTable, RouteTableRoute
from cdktf_cdktf_provider_aws.route_table_association import RouteTableAssociation
from cdktf_cdktf_provider_aws.subnet import Subnet
from cdktf_cdktf_provider_aws.vpc import Vpc
from constructs import Construct

from gpu_constructs import validate
from gpu_constructs.compute.eks.iam import policy_document, service_trust
from gpu_constructs.errors import ConfigError


def check_network(availability_zones: Sequence[str], vpc_cidr: str) -> None:
    """Zones and address range the VPC can be built from, for EKS: two to seven distinct zones, a /20
    or larger network."""
    if len(availability_zones) < 2:
        raise ConfigError(
            "availability_zones", availability_zones, "give at least two zones: EKS needs subnets in two"
        )
    validate.unique("availability_zones", availability_zones)
    if len(availability_zones) > 7:
        raise ConfigError("availability_zones", availability_zones, "use at most 7 zones")
    network = validate.cidr("vpc_cidr", vpc_cidr)
    if network.prefixlen > 20:
        raise ConfigError("vpc_cidr", vpc_cidr, "use a /20 or larger network for the subnets and pods")


@dataclass(frozen=True)
class AwsVpcProps:
    """Settings of the VPC."""

    name: str
    """Cluster name: the Name tag, and the karpenter.sh/discovery tag of the private subnets."""
    availability_zones: tuple[str, ...]
    """At least two; a private and a public subnet in each."""
    kms_key_arn: str
    """KMS key of the flow log group."""
    vpc_cidr: str = "10.0.0.0/16"
    single_nat_gateway: bool = True
    """One NAT gateway for all private subnets (cheap, the seed's dev); False puts one in each AZ."""
    flow_log_retention_days: int = 365

    def __post_init__(self) -> None:
        check_network(self.availability_zones, self.vpc_cidr)

    def subnets(self) -> tuple[list[str], list[str]]:
        """(private, public) CIDRs: /3 larger private subnets first, small public ones at the end."""
        network = ipaddress.IPv4Network(self.vpc_cidr)
        quarters = list(network.subnets(new_prefix=network.prefixlen + 3))
        private = [str(s) for s in quarters[: len(self.availability_zones)]]
        public_block = quarters[-1]
        public = [
            str(s)
            for s in list(public_block.subnets(new_prefix=public_block.prefixlen + 3))[
                : len(self.availability_zones)
            ]
        ]
        return private, public


class AwsVpc(Construct):
    """The network of an EKS cluster.

    ``resource_scope`` is where the resources are created (this construct unless given): EksGpuCompute
    passes itself, so its resources keep the logical ids they had before the VPC was its own construct.
    """

    vpc: Vpc
    public_subnets: list[Subnet]
    private_subnets: list[Subnet]
    egress: list[TerraformResource]
    """The private subnets' route out: their route table associations and route tables, the NAT
    gateways, and the public route table with its associations of the NAT gateways' subnets. The
    VPC has no interface endpoints, so the nodes reach ECR, EKS, STS and the rest of AWS through
    these only: what runs on the nodes depends on them (EksSystemCluster's node_network)."""

    def __init__(
        self, scope: Construct, id: str, *, props: AwsVpcProps, resource_scope: Construct | None = None
    ) -> None:
        super().__init__(scope, id)
        self.props = props
        self._here: Construct = resource_scope or self
        self._build()

    def _build(self) -> None:
        props = self.props
        tags = {"Name": props.name}
        self.vpc = Vpc(
            self._here,
            "vpc",
            cidr_block=props.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags,
        )
        # The VPC's default security group allows nothing: every resource here gets its own group.
        DefaultSecurityGroup(self._here, "default-security-group", vpc_id=self.vpc.id, tags=tags)
        igw = InternetGateway(self._here, "igw", vpc_id=self.vpc.id, tags=tags)
        private_cidrs, public_cidrs = props.subnets()
        self.public_subnets = [
            Subnet(
                self._here,
                f"public-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                tags={"Name": f"{props.name}-public-{zone}", "kubernetes.io/role/elb": "1"},
            )
            for zone, cidr in zip(props.availability_zones, public_cidrs, strict=True)
        ]
        self.private_subnets = [
            Subnet(
                self._here,
                f"private-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                tags={
                    "Name": f"{props.name}-private-{zone}",
                    "kubernetes.io/role/internal-elb": "1",
                    "karpenter.sh/discovery": props.name,
                },
            )
            for zone, cidr in zip(props.availability_zones, private_cidrs, strict=True)
        ]
        public_routes = RouteTable(
            self._here,
            "public-routes",
            vpc_id=self.vpc.id,
            route=[RouteTableRoute(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=tags,
        )
        public_associations = [
            RouteTableAssociation(
                self._here, f"public-{zone}-routes", subnet_id=subnet.id, route_table_id=public_routes.id
            )
            for subnet, zone in zip(self.public_subnets, props.availability_zones, strict=True)
        ]
        nat_count = 1 if props.single_nat_gateway else len(props.availability_zones)
        nats = []
        # A NAT gateway forwards only while its public subnet routes to the internet gateway (VPC
        # user guide, "NAT gateways": a public NAT gateway is created in a public subnet).
        self.egress = [public_routes, *public_associations[:nat_count]]
        for index in range(nat_count):
            zone = props.availability_zones[index]
            address = Eip(self._here, f"nat-{zone}-address", domain="vpc", tags=tags)
            nats.append(
                NatGateway(
                    self._here,
                    f"nat-{zone}",
                    allocation_id=address.id,
                    subnet_id=self.public_subnets[index].id,
                    tags=tags,
                    depends_on=[igw],
                )
            )
        for index, (subnet, zone) in enumerate(
            zip(self.private_subnets, props.availability_zones, strict=True)
        ):
            nat = nats[index % nat_count]
            routes = RouteTable(
                self._here,
                f"private-{zone}-routes",
                vpc_id=self.vpc.id,
                route=[RouteTableRoute(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags=tags,
            )
            association = RouteTableAssociation(
                self._here, f"private-{zone}-association", subnet_id=subnet.id, route_table_id=routes.id
            )
            self.egress += [routes, association]
        self.egress += nats

        flow_logs = CloudwatchLogGroup(
            self._here,
            "flow-logs",
            name=f"/aws/vpc/{props.name}/flow-logs",
            retention_in_days=props.flow_log_retention_days,
            kms_key_id=props.kms_key_arn,
        )
        flow_role = IamRole(
            self._here,
            "flow-logs-role",
            name=f"{props.name}-flow-logs",
            assume_role_policy=service_trust("vpc-flow-logs.amazonaws.com"),
        )
        IamRolePolicy(
            self._here,
            "flow-logs-policy",
            role=flow_role.id,
            policy=policy_document(
                {
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    "Resource": f"{flow_logs.arn}:*",
                }
            ),
        )
        FlowLog(
            self._here,
            "flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_logs.arn,
            iam_role_arn=flow_role.arn,
        )
