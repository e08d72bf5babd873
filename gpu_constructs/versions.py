"""Every pinned version the stacks deploy, in one place.

Each pin says where it comes from: ``seed`` is the version the seed document names where the default
differs from it, and ``checked_against`` names the upstream data in ../shared/upstream/ that the tests
validate the synthesized values against.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Pin:
    """One pinned version of a component."""

    version: str
    seed: str | None = None
    checked_against: str | None = None
    note: str = ""


# --- Terraform providers -------------------------------------------------------------------------
TERRAFORM_PROVIDER_AWS = Pin("5.100.0", note="bound by cdktf-cdktf-provider-aws 20.1.0")
TERRAFORM_PROVIDER_KUBERNETES = Pin("2.38.0", note="bound by cdktf-cdktf-provider-kubernetes 12.1.1")
TERRAFORM_PROVIDER_HELM = Pin("3.1.1", note="bound by cdktf-cdktf-provider-helm 12.1.2")
TERRAFORM_PROVIDER_NULL = Pin("3.2.4", note="bound by cdktf-cdktf-provider-null 11.0.1")
TERRAFORM_PROVIDER_EXTERNAL = Pin(
    "2.3.5", note="hand-written bindings in gpu_constructs/providers/external.py (single-node's API access)"
)

# --- Host software (single-node) -----------------------------------------------------------------
K3S = Pin(
    "v1.35.5+k3s1",
    seed="v1.29.0",
    note="k3s stable channel, May 2026; 1.29 is long out of upstream support",
)
KUBECTL_IMAGE = Pin(
    "registry.k8s.io/kubectl:v1.35.5",
    note="Kubernetes' own kubectl image, at the single-node k3s release; labels MIG nodes",
)
NVIDIA_DRIVER_BRANCH = Pin(
    "580",
    seed="545",
    note="580 is NVIDIA's long-term support branch; 545 was a short-lived feature branch, now EOL",
)
NVIDIA_CONTAINER_TOOLKIT = Pin(
    "1.20.0",
    seed="v1.14.6",
    note="same release as the toolkit image of the GPU Operator chart below",
)

LOCAL_PATH_PROVISIONER_IMAGE = Pin(
    "docker.io/rancher/local-path-provisioner:v0.0.37",
    note="per-StorageClass path maps (storageClassConfigs) since v0.0.27; k3s bundles the same provisioner",
)
LOCAL_PATH_HELPER_IMAGE = Pin(
    "docker.io/library/busybox:1.37.0",
    note="the helper pod that creates and removes volume directories",
)

# --- Helm charts ----------------------------------------------------------------------------------
GPU_OPERATOR = Pin(
    "v26.7.0",
    seed="v23.9.1",
    checked_against="gpu-operator/values.yaml (v26.7.0)",
)
CERT_MANAGER = Pin(
    "v1.21.1",
    seed="v1.19.2",
    checked_against="cert-manager/values.schema.json, cert-manager.io_clusterissuers.yaml (v1.21.x)",
)
TRAEFIK_CHART = Pin(
    "39.0.3",
    seed="Nginx Ingress",
    note=(
        "the seed names NGINX Ingress; the ingress-nginx project was retired in March 2026 and gets no "
        "more fixes, so the ingress controller is Traefik v3, the one k3s itself ships"
    ),
)
VAULT_CHART = Pin(
    "0.34.1",
    checked_against="vault-helm/values.schema.json (0.34.1)",
    note="deploys Vault 2.0.4",
)
VAULT = Pin("2.0.4", seed="1.17")
AWS_CLI_IMAGE = Pin(
    "amazon/aws-cli:2.17.29",
    note=(
        "uploads Vault's raft snapshots to the object store; before 2.23, whose default integrity "
        "checksums some S3-compatible stores refuse"
    ),
)
CLOUDNATIVE_PG_CHART = Pin(
    "0.28.2",
    note=(
        "CloudNativePG operator 1.29.1; replaces the seed's Bitnami chart "
        "(Bitnami moved its versioned images to a legacy repository in 2025)"
    ),
)
POSTGRES_IMAGE = Pin("ghcr.io/cloudnative-pg/postgresql:16.10", seed="16")

# --- Images ----------------------------------------------------------------------------------------
CUDA_SMOKE_TEST_IMAGE = Pin(
    "nvcr.io/nvidia/cuda:13.1.1-base-ubuntu24.04",
    seed="nvidia/cuda:12.0-base (single-node), nvidia/cuda:13.1.1-cudnn-devel-ubuntu24.04 (k3d-poc)",
    note="the base variant: nvidia-smi needs no cuDNN or compilers",
)

# --- Chart repositories ------------------------------------------------------------------------------
KUBE_PROMETHEUS_STACK_CHART = Pin(
    "88.5.3",
    note="Prometheus Operator v0.93.1, Grafana chart 12.11.1, kube-state-metrics 8.4.0, node-exporter 4.56.1",
)
DCGM_EXPORTER_IMAGE = Pin(
    "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless",
    checked_against="gpu-operator/values.yaml (v26.7.0) dcgmExporter.version",
    note="the exporter the GPU Operator runs; the device plugin stacks run the same image themselves",
)
REPO_PROMETHEUS_COMMUNITY = "https://prometheus-community.github.io/helm-charts"
REPO_NVIDIA = "https://helm.ngc.nvidia.com/nvidia"
REPO_JETSTACK = "https://charts.jetstack.io"
REPO_TRAEFIK = "https://traefik.github.io/charts"
REPO_HASHICORP = "https://helm.releases.hashicorp.com"
REPO_CNPG = "https://cloudnative-pg.github.io/charts"


def all_pins() -> dict[str, Pin]:
    """Every Pin defined in this module, by name (used by the version policy and the docs)."""
    return {name: value for name, value in globals().items() if isinstance(value, Pin)}


# --- EKS and Karpenter (eks-karpenter) --------------------------------------------------------------
@dataclass(frozen=True)
class EksVersionSupport:
    """When EKS ends a Kubernetes minor version's standard and extended support."""

    standard_until: date
    extended_until: date


AWS_REGIONS = (
    "af-south-1",
    "ap-east-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)
"""The commercial AWS regions with EKS (botocore 1.35.99's endpoint data for ``eks``); a region AWS
opens later is added here."""

EKS_SUPPORT_RECORDED = date(2026, 11, 23)
"""The day EKS_SUPPORT was read from the calendar: synth checks versions against it, never against
the clock, so the same code synthesizes the same stack on any day (update both together)."""
EKS_SUPPORT_SOURCE = (
    "Amazon EKS Kubernetes release calendar, "
    f"https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html, as of {EKS_SUPPORT_RECORDED}"
)
EKS_STANDARD_SUPPORT_MARGIN_DAYS = 90
"""A version whose standard support ends within this many days of EKS_SUPPORT_RECORDED counts as
past it: a stack synthesized from the table is applied and run in the months after the record."""
EKS_SUPPORT = {
    "1.28": EksVersionSupport(date(2024, 11, 26), date(2025, 11, 26)),
    "1.29": EksVersionSupport(date(2025, 3, 23), date(2026, 3, 23)),
    "1.30": EksVersionSupport(date(2025, 7, 23), date(2026, 7, 23)),
    "1.31": EksVersionSupport(date(2025, 11, 26), date(2026, 11, 26)),
    "1.32": EksVersionSupport(date(2026, 3, 23), date(2027, 3, 23)),
    "1.33": EksVersionSupport(date(2026, 7, 29), date(2027, 7, 29)),
    "1.34": EksVersionSupport(date(2026, 12, 2), date(2027, 12, 2)),
    "1.35": EksVersionSupport(date(2027, 3, 27), date(2028, 3, 27)),
}
"""Kubernetes minor versions on EKS (source: EKS_SUPPORT_SOURCE). EKS creates clusters on versions in
standard or extended support; after extended support ends it refuses them."""

EKS_KUBERNETES = Pin(
    "1.35",
    seed="1.31",
    note=(
        "1.31 leaves EKS extended support on 2026-11-26 and 1.34 standard support on 2026-12-02 "
        "(extended support bills the control plane six times the standard rate); 1.35 is in "
        "standard support until 2027-03-27"
    ),
)
KARPENTER_CHART = Pin(
    "1.14.1",
    seed="v1.0.8",
    checked_against=(
        "karpenter/values.yaml, karpenter.sh_nodepools.yaml, karpenter.k8s.aws_ec2nodeclasses.yaml (v1.14.1)"
    ),
)
NVIDIA_DEVICE_PLUGIN_CHART = Pin(
    "0.20.0",
    seed="v0.17.0",
    checked_against="nvidia-device-plugin/values.yaml (v0.20.0 chart)",
)
EKS_NODE_AMI = Pin(
    "al2023@v20260304",
    note=(
        "the EKS-optimized AL2023 release Karpenter's EC2NodeClasses launch (Karpenter resolves the "
        "alias to the NVIDIA variant for GPU types: amazon-eks-node-al2023-x86_64-nvidia-<k8s>-v20260304). "
        "Chosen because AMIs named amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260304 appear in public "
        "EKS deployments (March 2026); its release notes in awslabs/amazon-eks-ami were not available "
        "to check, nor was this account's region, where the release must exist for the cluster's "
        "Kubernetes version: `aws ssm get-parameter --name /aws/service/eks/optimized-ami/"
        "1.35/amazon-linux-2023/x86_64/nvidia/amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260304/"
        "image_id`. Move it forward deliberately (docs/eks-karpenter.md, AMI updates)."
    ),
)
AWS_LB_CONTROLLER_CHART = Pin("1.14.0", note="AWS Load Balancer Controller v2.14")
RDS_POSTGRES = Pin("16", note="major version; RDS applies minor upgrades in the maintenance window")
KEDA_CHART = Pin("2.20.2", note="KEDA 2.20.2: scales the inference Deployment to zero and back")
KEDA_HTTP_ADD_ON_CHART = Pin(
    "0.15.0", note="KEDA HTTP add-on 0.15.0: the interceptor that holds requests while a workload starts"
)
EXTERNAL_DNS_CHART = Pin("1.21.1", note="ExternalDNS v0.21.0: app_domain's Route 53 record for the ALB")

REPO_KARPENTER = "oci://public.ecr.aws/karpenter"
REPO_NVIDIA_DEVICE_PLUGIN = "https://nvidia.github.io/k8s-device-plugin"
REPO_EKS_CHARTS = "https://aws.github.io/eks-charts"
REPO_KEDA = "https://kedacore.github.io/charts"
REPO_EXTERNAL_DNS = "https://kubernetes-sigs.github.io/external-dns"

# --- k3d proof of concept ------------------------------------------------------------------------------
K3D_K3S = Pin("v1.35.5-k3s1", note="rancher/k3s tag of the k3d-poc node image, the single-node k3s release")
K3D_CUDA_BASE = Pin(
    "13.1.1-base-ubuntu24.04", note="nvcr.io/nvidia/cuda tag under the k3d-poc node image (the smoke test's)"
)
K3D_K3S_CUDA_IMAGE = Pin(
    f"k3s-cuda:{K3D_K3S.version}-cuda{K3D_CUDA_BASE.version.split('-')[0]}",
    note=(
        "built from docker/k3s-cuda/Dockerfile (k3d's CUDA guide) with K3D_K3S, K3D_CUDA_BASE and "
        "NVIDIA_CONTAINER_TOOLKIT, by `make k3s-cuda-image` or by the k3d-poc stack itself"
    ),
)
ARGO_CD_CHART = Pin(
    "10.1.1",
    note=(
        "Argo CD v3.4.4; the newest argo-cd chart in ../shared/upstream/charts, so the optional release is "
        "rendered and validated like every other"
    ),
)
REPO_ARGO = "https://argoproj.github.io/argo-helm"

# --- LKE ------------------------------------------------------------------------------------------------
TERRAFORM_PROVIDER_LINODE = Pin(
    "3.13.0", note="hand-written bindings in gpu_constructs/compute/lke/bindings.py"
)
LKE_KUBERNETES = Pin("1.34")
LKE_KUBERNETES_OFFERED = ("1.33", "1.34", "1.35")
"""Kubernetes versions LKE (standard tier) offers, as minor versions. Source: Linode's LKE version
list, which GET /v4/lke/versions returns (``linode-cli lke versions-list``); recorded 2026-11-23
from Linode's documentation without API access, so confirm it with that command before a deploy.
LKE drops a minor a few months after upstream does: update this table when the list changes."""
LKE_GPU_REGIONS: dict[str, tuple[str, ...]] = {
    "g2-gpu-rtx4000a": ("de-fra-2", "fr-par", "in-bom-2", "jp-osa", "sg-sin-2", "us-ord", "us-sea"),
    # RTX PRO 6000 Blackwell (g3-gpu-rtxpro6000-blackwell-1/-2/-4): visible only to accounts granted
    # Blackwell access; regions as deployed in public Linode configurations (2026), not a Linode page.
    "g3-gpu-rtxpro6000-blackwell-": ("ca-central", "id-cgk", "us-lax", "us-sea"),
}
"""Regions that offer each Linode GPU plan family (plan ids start with the key). Source: Linode's GPU
plan documentation; recorded 2026-11-23 without API access, so confirm it before a deploy with
``linode-cli regions list`` (capability "GPU Linodes") and ``linode-cli linodes types``."""
CLOUD_FIREWALL_CRD_CHART = Pin("0.2.0", note="linode/cloud-firewall-controller's CloudFirewall CRD")
CLOUD_FIREWALL_CONTROLLER_CHART = Pin(
    "0.2.1",
    note="cloud-firewall-controller v0.2.1: keeps every node of a standard-tier LKE cluster in one firewall",
)
REPO_LINODE_CLOUD_FIREWALL = "https://linode.github.io/cloud-firewall-controller"
LKE_GPU_PLAN = Pin(
    "g2-gpu-rtx4000a1-s",
    seed="g1-gpu-rtx6000-1",
    note=(
        "the seed names an RTX 6000 plan but describes an RTX 4000 Ada node (4 vCPU, 16 GB); LKE offers "
        "no Quadro RTX 6000 plans, so the default is the RTX 4000 Ada plan"
    ),
)

# --- proxmox-ha -----------------------------------------------------------------------------------------
TERRAFORM_PROVIDER_PROXMOX = Pin(
    "0.111.1", note="hand-written bindings in gpu_constructs/compute/proxmox/bindings.py"
)
K3S_PROXMOX = Pin(
    "v1.33.4+k3s1",
    seed="v1.31",
    note="Rancher 2.12 supports Kubernetes up to 1.33, so this cluster stays on 1.33 until Rancher moves",
)
RANCHER_CHART = Pin("2.12.1")
NFS_SUBDIR_CHART = Pin("4.0.18")
JUPYTERHUB_CHART = Pin("4.4.0", seed="3.1.0", checked_against="jupyterhub/values.schema.yaml (4.4.0)")
NGC_PYTORCH_IMAGE = Pin("nvcr.io/nvidia/pytorch:25.01-py3")
NGC_TENSORFLOW_IMAGE = Pin("nvcr.io/nvidia/tensorflow:25.01-tf2-py3", note="NGC's TensorFlow container line")
JUPYTERHUB_SINGLEUSER = Pin(
    "5.5.0",
    note="the JupyterHub of z2jh 4.4.0's hub image (its Chart.yaml appVersion), installed into the notebook "
    "images (docker/notebook-*): jupyterhub-singleuser must match the hub",
)
UBUNTU_CLOUD_IMAGE = Pin(
    "https://cloud-images.ubuntu.com/releases/noble/release-20250516/ubuntu-24.04-server-cloudimg-amd64.img",
    seed="noble/current",
    note="a dated release, never current/ (republished, it would replace the download on every plan); "
    "Canonical moves older releases to cloud-images-archive.ubuntu.com under the same path",
)
UBUNTU_CLOUD_IMAGE_SHA256 = Pin(
    "8d6161defd323d24d66f85dda40e64e2b9021aefa4ca879dcbc4ec775ad1bbc5",
    checked_against="SHA256SUMS of releases/noble/release-20250516/ (ubuntu-24.04-server-cloudimg-amd64.img)",
)

REPO_RANCHER = "https://releases.rancher.com/server-charts/stable"
REPO_NFS_SUBDIR = "https://kubernetes-sigs.github.io/nfs-subdir-external-provisioner/"
REPO_JUPYTERHUB = "https://hub.jupyter.org/helm-chart/"
KUBE_VIP_IMAGE = Pin("ghcr.io/kube-vip/kube-vip:v1.0.1")
