"""AWS services around an EKS GPU cluster: RDS PostgreSQL, the Load Balancer Controller, an ACM
certificate and the deployment role."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdktf import DataResource, Fn, LocalExecProvisioner, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.acm_certificate import AcmCertificate
from cdktf_cdktf_provider_aws.acm_certificate_validation import AcmCertificateValidation
from cdktf_cdktf_provider_aws.db_instance import DbInstance
from cdktf_cdktf_provider_aws.db_parameter_group import DbParameterGroup, DbParameterGroupParameter
from cdktf_cdktf_provider_aws.db_subnet_group import DbSubnetGroup
from cdktf_cdktf_provider_aws.eks_access_entry import EksAccessEntry
from cdktf_cdktf_provider_aws.eks_access_policy_association import EksAccessPolicyAssociation
from cdktf_cdktf_provider_aws.eks_pod_identity_association import EksPodIdentityAssociation
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.kms_alias import KmsAlias
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from cdktf_cdktf_provider_aws.route53_record import Route53Record
from cdktf_cdktf_provider_aws.security_group import SecurityGroup
from cdktf_cdktf_provider_aws.vpc_security_group_ingress_rule import VpcSecurityGroupIngressRule
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.compute.eks import SYSTEM_TAINT, EksGpuCompute
from gpu_constructs.compute.eks.iam import policy_document, policy_file, service_trust
from gpu_constructs.errors import ConfigError

# RDS for PostgreSQL offers no Performance Insights on these classes (RDS user guide,
# USER_PerfInsights.Overview.Engines, "DB instance class support"); CreateDBInstance refuses them.
NO_PERFORMANCE_INSIGHTS = frozenset(
    {"db.t2.micro", "db.t2.small", "db.t3.micro", "db.t3.small", "db.t4g.micro", "db.t4g.small"}
)


@dataclass(frozen=True)
class RdsPostgresProps:
    compute: EksGpuCompute
    name: str
    database: str = "app"
    username: str = "app"
    instance_class: str = "db.t4g.medium"
    allocated_storage_gi: int = 20
    max_allocated_storage_gi: int = 100
    multi_az: bool = False
    """A standby in a second zone; the seed's dev environment runs one instance."""
    backup_retention_days: int = 30
    """RDS automated backups (daily snapshot and transaction logs, point-in-time restore), the
    seed's 30 days; RDS allows 1 to 35."""
    deletion_protection: bool = True
    """RDS refuses to delete the instance; lift it (False, one apply) before a destroy."""
    engine_version: str = versions.RDS_POSTGRES.version

    def __post_init__(self) -> None:
        validate.int_range("allocated_storage_gi", self.allocated_storage_gi, 20, 65536)
        validate.int_range(
            "max_allocated_storage_gi",
            self.max_allocated_storage_gi,
            self.allocated_storage_gi,
            65536,
            why="autoscaling storage cannot be below allocated_storage_gi",
        )
        validate.int_range("backup_retention_days", self.backup_retention_days, 1, 35)
        validate.version("engine_version", self.engine_version, r"16(\.\d+)?", "16")
        if not re.fullmatch(r"db\.[a-z0-9-]+\.[a-z0-9]+", self.instance_class):
            raise ConfigError(
                "instance_class",
                self.instance_class,
                "give an RDS instance class with its db. prefix, e.g. db.t4g.medium",
            )
        if self.instance_class in NO_PERFORMANCE_INSIGHTS:
            raise ConfigError(
                "instance_class",
                self.instance_class,
                "Performance Insights (always on here) needs db.t3.medium, db.t4g.medium or larger",
            )


class RdsPostgres(Construct):
    """Private, encrypted PostgreSQL with its master password kept by RDS in Secrets Manager."""

    def __init__(self, scope: Construct, id: str, *, props: RdsPostgresProps) -> None:
        super().__init__(scope, id)
        compute = props.compute
        subnets = DbSubnetGroup(
            self, "subnets", name=props.name, subnet_ids=[s.id for s in compute.private_subnets]
        )
        self.security_group = SecurityGroup(
            self,
            "security-group",
            name=f"{props.name}-db",
            description="PostgreSQL from the EKS cluster",
            vpc_id=compute.vpc.id,
        )
        VpcSecurityGroupIngressRule(
            self,
            "from-cluster",
            security_group_id=self.security_group.id,
            referenced_security_group_id=compute.eks.vpc_config.cluster_security_group_id,
            ip_protocol="tcp",
            from_port=5432,
            to_port=5432,
            description="EKS nodes and pods",
        )
        monitoring = IamRole(
            self,
            "monitoring-role",
            name=f"{props.name}-rds-monitoring",
            assume_role_policy=service_trust("monitoring.rds.amazonaws.com"),
        )
        monitoring_policy = IamRolePolicyAttachment(
            self,
            "monitoring-policy",
            role=monitoring.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
        )
        parameters = DbParameterGroup(
            self,
            "parameters",
            name=f"{props.name}-postgres16",
            family="postgres16",
            parameter=[
                # DDL statements and queries slower than a second go to the postgresql log export.
                DbParameterGroupParameter(name="log_statement", value="ddl"),
                DbParameterGroupParameter(name="log_min_duration_statement", value="1000"),
                # Clients must use TLS.
                DbParameterGroupParameter(name="rds.force_ssl", value="1"),
            ],
        )
        # The database's own key, kept when the stack goes: the final snapshot and the automated
        # backups' copies are encrypted with it, and a key the same destroy schedules for deletion
        # (the cluster's) would make them unreadable after its waiting period. prevent_destroy makes
        # a destroy stop until the key leaves the state (docs/eks-karpenter.md, Teardown), which keeps
        # it in AWS.
        self.kms = KmsKey(
            self,
            "kms",
            description=f"{props.name}: RDS storage, snapshots and Performance Insights (kept on destroy)",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            # The account administers the key through IAM (AWS's default key policy); RDS uses it
            # through the grants it creates for the instance.
            policy=policy_document(
                {
                    "Sid": "Account",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{props.compute.account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ),
            lifecycle=TerraformResourceLifecycle(prevent_destroy=True),
        )
        KmsAlias(self, "kms-alias", name=f"alias/{props.name}-rds", target_key_id=self.kms.key_id)
        # A name made once, when the stack is created, and kept in its state: a second stack of the
        # same name, created after the first was destroyed, takes its final snapshot under another
        # name instead of failing on the first one's (DBSnapshotAlreadyExists).
        self.snapshot_suffix = DataResource(self, "final-snapshot-suffix", input={"database": props.name})
        self.instance = DbInstance(
            self,
            "instance",
            identifier=props.name,
            engine="postgres",
            engine_version=props.engine_version,
            instance_class=props.instance_class,
            allocated_storage=props.allocated_storage_gi,
            max_allocated_storage=props.max_allocated_storage_gi,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=self.kms.arn,
            db_name=props.database,
            username=props.username,
            manage_master_user_password=True,
            db_subnet_group_name=subnets.name,
            parameter_group_name=parameters.name,
            vpc_security_group_ids=[self.security_group.id],
            publicly_accessible=False,
            multi_az=props.multi_az,
            backup_retention_period=props.backup_retention_days,
            deletion_protection=props.deletion_protection,
            skip_final_snapshot=False,
            final_snapshot_identifier=f"{props.name}-final-{self.snapshot_suffix.id}",
            # A deleted instance keeps its automated backups for their retention period (RDS
            # "retained automated backups"), so a point in time before the deletion stays restorable;
            # the provider's default deletes them with the instance, leaving only the final snapshot.
            delete_automated_backups=False,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            iam_database_authentication_enabled=True,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            performance_insights_enabled=True,
            performance_insights_kms_key_id=self.kms.arn,
            monitoring_interval=60,
            monitoring_role_arn=monitoring.arn,
            # Enhanced monitoring needs the role's policy: created after it, deleted before it.
            depends_on=[monitoring_policy],
        )

    @property
    def master_secret_arn(self) -> str:
        """Secrets Manager secret that RDS keeps the master credentials in."""
        return self.instance.master_user_secret.get(0).secret_arn


class LoadBalancerController(Construct):
    """AWS Load Balancer Controller on the system nodes, with its IAM role through Pod Identity."""

    def __init__(self, scope: Construct, id: str, *, compute: EksGpuCompute) -> None:
        super().__init__(scope, id)
        role = IamRole(
            self,
            "role",
            name=f"{compute.name}-lb-controller",
            assume_role_policy=service_trust("pods.eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        policy = IamRolePolicy(self, "policy", role=role.id, policy=self._policy(compute.region))
        identity = EksPodIdentityAssociation(
            self,
            "pod-identity",
            cluster_name=compute.eks.name,
            namespace="kube-system",
            service_account="aws-load-balancer-controller",
            role_arn=role.arn,
        )
        chart_version = versions.AWS_LB_CONTROLLER_CHART.version
        # The controller's CRDs (TargetGroupBinding, which it makes itself for every Ingress
        # backend, and IngressClassParams; the gateway ones too) are in the chart's crds/, which
        # Helm installs on the first install only; upstream has them applied by hand at each bump
        # (`kubectl apply -k .../aws-load-balancer-controller//crds`, the chart's upgrade notes).
        # This step applies the CRDs of the pinned chart, server-side, after the cluster and before
        # the controller's release: replaced, so run again, when the chart version changes (and
        # with the cluster), so the controller never runs against older schemas. Helm's own install
        # of crds/ then finds them there and leaves them (it skips a CRD that exists). It needs
        # aws, helm and kubectl where Terraform runs (docs/eks-karpenter.md).
        kubeconfig = ".terraform/aws-load-balancer-controller-crds.kubeconfig"
        self.crds = DataResource(
            self,
            "crds",
            triggers_replace={
                "chart": "aws-load-balancer-controller",
                "version": chart_version,
                "KUBECONFIG": kubeconfig,
            },
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    interpreter=["bash", "-c"],
                    command=self.crds_command(compute.region, compute.name, chart_version),
                    # Its own kubeconfig in Terraform's working directory, not the user's.
                    # Its own kubeconfig in Terraform's working directory, not the user's.
                    environment={"KUBECONFIG": kubeconfig},
                )
            ],
            **compute.cluster.installed(),
        )
        self.release = helm.release(
            self,
            "release",
            cluster=compute.cluster,
            name="aws-load-balancer-controller",
            chart="aws-load-balancer-controller",
            repository=versions.REPO_EKS_CHARTS,
            version=versions.AWS_LB_CONTROLLER_CHART.version,
            namespace="kube-system",
            values={
                "clusterName": compute.name,
                "region": compute.region,
                "vpcId": compute.vpc.id,
                "replicaCount": 2,
                "serviceAccount": {"name": "aws-load-balancer-controller"},
                "nodeSelector": {"role": "system"},
                "tolerations": [
                    {"key": SYSTEM_TAINT.key, "operator": "Exists", "effect": SYSTEM_TAINT.effect}
                ],
                # The chart's service mutator (mservice.elbv2.k8s.aws, failurePolicy Fail, on every
                # Service CREATE; chart 1.14.0 templates/webhook.yaml) only makes this controller the
                # default for Services of type LoadBalancer, which the stack has none of. Left on, it
                # refuses every Service created while the controller's pods are not serving, so
                # releases applied beside it fail at random
                # (kubernetes-sigs/aws-load-balancer-controller#4140).
                "enableServiceMutatorWebhook": False,
            },
            # Its policy too: on destroy the controller deletes the ALB, its target groups and
            # security groups when the Ingress goes, which it cannot once the policy is gone; and the
            # public subnets the ALB sits in stay until then (their deletion fails while its
            # network interfaces are in them).
            depends_on=[identity, policy, self.crds, *compute.public_subnets],
        )

    @staticmethod
    def crds_command(region: str, cluster: str, version: str) -> str:
        """The script that applies the chart's CRDs at ``version`` to the cluster: the cluster's
        kubeconfig (``KUBECONFIG``, set by the step; it holds no credential, only the ``aws eks
        get-token`` call), ``helm show crds`` of the pinned chart (read whole first: a failed
        download stops the script, and an empty one fails the apply), and a server-side apply that
        takes
        the fields Helm's first install owned (``--force-conflicts``)."""
        return (
            "set -euo pipefail; "
            f"aws eks update-kubeconfig --region {region} --name {cluster} >/dev/null; "
            "helm version --short >/dev/null; "
            f'crds="$(helm show crds aws-load-balancer-controller --version {version} '
            f'--repo {versions.REPO_EKS_CHARTS})"; '
            "printf '%s\\n' \"$crds\" | kubectl apply --server-side --force-conflicts "
            "--field-manager=aws-load-balancer-controller-crds -f -"
        )

    @staticmethod
    def _policy(region: str) -> str:
        """The controller's permissions (policies/aws-load-balancer-controller.json), after the upstream
        recommended policy (v2.14.0 docs/install/iam_policy.json), kept to one region but for IAM and
        Shield: their one endpoint is in us-east-1, so a region condition would deny their calls
        (docs/eks-karpenter.md, "IAM policies against upstream", lists every difference).

        Reads are unscoped (those APIs have no resource-level permissions). Load balancers, target
        groups and security groups must be created carrying the controller's cluster tag
        (``elbv2.k8s.aws/cluster``), and only resources carrying it are changed or deleted; the tag
        itself cannot be added to or removed from an existing resource.
        """
        return policy_file("aws-load-balancer-controller", region=region)


EXTERNAL_DNS_SERVICE_ACCOUNT = "external-dns"
EXTERNAL_DNS_INTERVAL_S = 60
"""ExternalDNS's sync interval (the chart's ``interval``, 1m by default: values.yaml)."""
RECORD_CLEANUP_S = EXTERNAL_DNS_INTERVAL_S + 15
"""How long a destroy waits after the last Ingress goes before ExternalDNS is uninstalled: one
sync interval and a margin, so the sync that no longer sees the Ingress deletes its records."""


class ExternalDns(Construct):
    """ExternalDNS on the system nodes: Route 53 records for the stack's Ingress hosts (app_domain,
    grafana_host) pointing at the ALBs the load balancer controller made for them, in one hosted
    zone, with a role that may change records in that zone only.

    ``policy: sync`` deletes a record once no Ingress asks for its name, and only records this
    instance owns (the TXT registry, owner id = the cluster's name): a changed host name moves the
    record, and a destroy removes them when the Ingresses go first (everything with an Ingress
    depends on this release)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        compute: EksGpuCompute,
        zone_id: str,
    ) -> None:
        super().__init__(scope, id)
        zone = f"arn:aws:route53:::hostedzone/{zone_id}"
        role = IamRole(
            self,
            "role",
            name=f"{compute.name}-external-dns",
            assume_role_policy=service_trust("pods.eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        # ExternalDNS's AWS tutorial (docs/tutorials/aws.md) grants ChangeResourceRecordSets on
        # hostedzone/* and the reads on *; here the changes and the zone's reads are this zone's.
        # ListHostedZones has no resource-level permission (Route 53's service authorization).
        self.policy = IamRolePolicy(
            self,
            "policy",
            role=role.id,
            policy=policy_document(
                {
                    "Sid": "RecordsOfTheStacksZone",
                    "Effect": "Allow",
                    "Action": [
                        "route53:ChangeResourceRecordSets",
                        "route53:ListResourceRecordSets",
                        "route53:ListTagsForResources",
                    ],
                    "Resource": zone,
                },
                {
                    "Sid": "FindTheZone",
                    "Effect": "Allow",
                    "Action": "route53:ListHostedZones",
                    "Resource": "*",
                },
            ),
        )
        identity = EksPodIdentityAssociation(
            self,
            "pod-identity",
            cluster_name=compute.eks.name,
            namespace="kube-system",
            service_account=EXTERNAL_DNS_SERVICE_ACCOUNT,
            role_arn=role.arn,
        )
        self.release = helm.release(
            self,
            "release",
            cluster=compute.cluster,
            name="external-dns",
            chart="external-dns",
            repository=versions.REPO_EXTERNAL_DNS,
            version=versions.EXTERNAL_DNS_CHART.version,
            namespace="kube-system",
            values={
                "provider": {"name": "aws"},
                # The nodes' metadata answers only the node itself (hop limit 1).
                "env": [{"name": "AWS_REGION", "value": compute.region}],
                "serviceAccount": {"name": EXTERNAL_DNS_SERVICE_ACCOUNT},
                "sources": ["ingress"],
                "policy": "sync",
                "registry": "txt",
                "txtOwnerId": compute.name,
                # The stack's zone only (--zone-id-filter), and in it only the records this cluster
                # owns (the TXT registry, txtOwnerId): no domainFilters. ExternalDNS plans only over
                # records matching its domain filters, current ones included (external-dns v0.21.0
                # plan/plan.go Calculate and filterRecordsForPlan: "Ignore records that do not match
                # the domain filter provided"), so filters naming app_domain would leave the old
                # name's records behind when app_domain changes. Without them the old name's records
                # are still this owner's, no Ingress wants them, and sync deletes them
                # (calculateChanges: a name with no candidates is deleted, if owned). An empty filter
                # matches every zone name (endpoint/domain_filter.go Match), so the zone-id filter
                # alone selects the zone, and no --aws-zone-match-parent is needed.
                "extraArgs": [f"--zone-id-filter={zone_id}"],
                # A new or deleted Ingress is acted on at once (after --min-event-sync-interval, 5s),
                # and at the latest at the next interval.
                "triggerLoopOnEvent": True,
                "interval": f"{EXTERNAL_DNS_INTERVAL_S}s",
                "nodeSelector": {"role": "system"},
                "tolerations": [
                    {"key": SYSTEM_TAINT.key, "operator": "Exists", "effect": SYSTEM_TAINT.effect}
                ],
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
            },
            # Its credentials outlive it on destroy: the records are deleted while it still runs.
            depends_on=[identity, self.policy],
        )
        # What a release with an Ingress depends on instead of the release itself. On destroy the
        # helm provider's uninstall returns once the Ingress is gone (it waits for the deleted
        # objects: terraform-provider-helm v3.1.1 resource_helm_release.go, uninstall.Wait), and
        # Terraform would uninstall ExternalDNS next, before the sync that no longer sees the
        # Ingress deletes its records (debounced 5s after the event, external-dns v0.21.0
        # pkg/apis/externaldns/types.go MinEventSyncInterval, else the next interval). This step
        # goes between them and, on destroy only, waits one interval and a margin. The hashicorp/time
        # provider's time_sleep would do the same; it is not in the offline provider mirror.
        self.record_cleanup = DataResource(
            self,
            "record-cleanup",
            input={"seconds": RECORD_CLEANUP_S},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    when="destroy",
                    command="sleep ${self.input.seconds}",
                )
            ],
            **compute.cluster.installed([self.release]),
        )


class Certificate(Construct):
    """An ACM certificate for one domain, validated through a Route 53 record."""

    def __init__(self, scope: Construct, id: str, *, domain: str, zone_id: str) -> None:
        super().__init__(scope, id)
        self.certificate = AcmCertificate(
            self,
            "certificate",
            domain_name=domain,
            validation_method="DNS",
            lifecycle={"create_before_destroy": True},
        )
        option = Fn.element(Fn.tolist(self.certificate.domain_validation_options), 0)
        record = Route53Record(
            self,
            "validation",
            zone_id=zone_id,
            name=Fn.lookup(option, "resource_record_name", ""),
            type=Fn.lookup(option, "resource_record_type", ""),
            records=[Fn.lookup(option, "resource_record_value", "")],
            ttl=300,
            allow_overwrite=True,
        )
        self.validation = AcmCertificateValidation(
            self, "validated", certificate_arn=self.certificate.arn, validation_record_fqdns=[record.fqdn]
        )

    @property
    def arn(self) -> str:
        return self.validation.certificate_arn


class DeployerRole(Construct):
    """The role CI assumes to deploy: cluster admin through an access entry."""

    def __init__(self, scope: Construct, id: str, *, compute: EksGpuCompute, principal_arn: str) -> None:
        super().__init__(scope, id)
        name = compute.name
        self.role = IamRole(
            self,
            "role",
            name=f"{name}-deployer",
            assume_role_policy=policy_document(
                {"Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"}
            ),
        )
        IamRolePolicy(
            self,
            "eks",
            role=self.role.id,
            policy=policy_document(
                {"Effect": "Allow", "Action": ["eks:DescribeCluster"], "Resource": compute.eks.arn}
            ),
        )
        entry = EksAccessEntry(self, "access", cluster_name=compute.eks.name, principal_arn=self.role.arn)
        EksAccessPolicyAssociation(
            self,
            "admin",
            cluster_name=compute.eks.name,
            principal_arn=entry.principal_arn,
            policy_arn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
            access_scope={"type": "cluster"},
        )
