"""The GPU Operator and an application on a cluster you already have.

Edit the settings below for your cluster, then ``cdktf synth`` (or ``python main.py``) and deploy
from ``cdktf.out/stacks/own-cluster`` with ``terraform init`` and ``terraform apply``.
"""

from pathlib import Path

from gpu_constructs import provider_imports

provider_imports.install()  # first, before any cdktf, constructs or provider import

from cdktf import App, TerraformOutput, TerraformStack, TerraformVariable  # noqa: E402
from cdktf_cdktf_provider_helm.provider import HelmProvider  # noqa: E402

from gpu_constructs import (  # noqa: E402
    AppChart,
    AppChartProps,
    GpuOperator,
    GpuOperatorProps,
    ValuesLayers,
    existing_cluster,
)

# The cluster: a kubeconfig context and what its GPU nodes are. platform="aks" brings AKS' own
# GPU node label (kubernetes.azure.com/accelerator=nvidia), its guide's sku=gpu taint, and the
# driver and toolkit of AKS' GPU node image; see docs/own-cluster.md for the other platforms.
KUBECONFIG = "~/.kube/config"
CONTEXT = "team-gpu"
PLATFORM = "aks"
GPUS_PER_NODE = 1
GPU_NODES = 2
# The cluster's ingress controller and cert-manager ClusterIssuer (None: no certificate).
INGRESS_CLASS = "nginx"
INGRESS_NAMESPACE = "ingress-nginx"
CLUSTER_ISSUER = "letsencrypt-production"
HOST = "inference.example.com"

app = App()
stack = TerraformStack(app, "own-cluster")
cluster = existing_cluster(
    name="team-gpu",
    kubeconfig=KUBECONFIG,
    context=CONTEXT,
    platform=PLATFORM,
    gpus_per_node=GPUS_PER_NODE,
    gpu_nodes=GPU_NODES,
)
HelmProvider(stack, "helm", kubernetes=cluster.access.helm_kubernetes())

operator = GpuOperator(stack, "gpu-operator", props=GpuOperatorProps(cluster=cluster))
image = TerraformVariable(
    stack, "app_image", type="string", description="The application image, with a pinned tag or digest."
)
application = AppChart(
    stack,
    "app",
    props=AppChartProps(
        cluster=cluster,
        name="inference",
        namespace="inference",
        image=image.string_value,
        host=HOST,
        values=ValuesLayers("production", Path(__file__).resolve().parent / "helm-values"),
        ingress_class=INGRESS_CLASS,
        ingress_namespace=INGRESS_NAMESPACE,
        cluster_issuer=CLUSTER_ISSUER,
        depends_on=[operator.release],
    ),
)
TerraformOutput(stack, "app_url", value=f"https://{HOST}")
app.synth()
