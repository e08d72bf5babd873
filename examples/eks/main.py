"""An EKS cluster whose GPU nodes Karpenter starts on demand, with NVIDIA's device plugin.

Set the region and zones below, then ``cdktf synth`` (or ``python main.py``) and deploy from
``cdktf.out/stacks/eks``: ``terraform init`` and ``terraform apply`` ask for the AWS account id
(the provider refuses any other account's credentials). Needs ``pip install gpu-constructs[aws]``.
"""

from gpu_constructs import provider_imports

provider_imports.install()  # first, before any cdktf, constructs or provider import

from cdktf import App, TerraformOutput, TerraformStack, TerraformVariable  # noqa: E402
from cdktf_cdktf_provider_aws.provider import AwsProvider  # noqa: E402
from cdktf_cdktf_provider_helm.provider import HelmProvider  # noqa: E402

from gpu_constructs import NvidiaDevicePlugin, NvidiaDevicePluginProps  # noqa: E402
from gpu_constructs.compute import EksGpuCompute, EksProps  # noqa: E402

NAME = "gpu-eks"
REGION = "eu-west-1"
AVAILABILITY_ZONES = ("eu-west-1a", "eu-west-1b")

app = App()
stack = TerraformStack(app, "eks")
account_id = TerraformVariable(
    stack, "account_id", type="string", description="The AWS account to deploy into."
)
AwsProvider(stack, "aws", region=REGION, allowed_account_ids=[account_id.string_value])
compute = EksGpuCompute(
    stack,
    "eks",
    props=EksProps(
        name=NAME,
        region=REGION,
        account_id=account_id.string_value,
        availability_zones=AVAILABILITY_ZONES,
    ),
)
HelmProvider(stack, "helm", kubernetes=compute.cluster.access.helm_kubernetes())
NvidiaDevicePlugin(
    stack,
    "nvidia-device-plugin",
    props=NvidiaDevicePluginProps(cluster=compute.cluster, depends_on=[compute.node_pools]),
)
TerraformOutput(
    stack, "update_kubeconfig", value=f"aws eks update-kubeconfig --name {NAME} --region {REGION}"
)
app.synth()
