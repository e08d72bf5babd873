"""k3s, the NVIDIA driver and the GPU Operator on one GPU host reached over SSH.

Set the host below, then ``cdktf synth`` (or ``python main.py``) and deploy from
``cdktf.out/stacks/k3s-host``: ``terraform init`` and ``terraform apply`` ask for the k3s token and
the host's SSH public key (``ssh-keyscan -t ed25519 <address> | cut -d' ' -f2-``).
"""

from gpu_constructs import provider_imports

provider_imports.install()  # first, before any cdktf, constructs or provider import

from cdktf import App, TerraformOutput, TerraformStack, TerraformVariable  # noqa: E402
from cdktf_cdktf_provider_helm.provider import HelmProvider  # noqa: E402

from gpu_constructs import GpuOperator, GpuOperatorProps, SshHost  # noqa: E402
from gpu_constructs.compute import K3sHostGpuCompute, K3sHostProps  # noqa: E402

ADDRESS = "192.168.1.50"
SSH_USER = "ubuntu"
SSH_KEY = "~/.ssh/id_ed25519"
KUBECONFIG = "kubeconfig/k3s-host.yaml"
"""Where the apply writes a copy of the admin kubeconfig for kubectl, relative to
cdktf.out/stacks/k3s-host. The helm provider does not read it: its access is read from the host
over SSH at every plan and apply."""

app = App()
stack = TerraformStack(app, "k3s-host")
k3s_token = TerraformVariable(
    stack, "k3s_token", type="string", sensitive=True, description="The k3s cluster secret."
)
host_key = TerraformVariable(
    stack, "host_key", type="string", description="The host's SSH public key, '<type> <base64>'."
)
host = SshHost(ADDRESS, SSH_USER, SSH_KEY, host_key=host_key.string_value)
compute = K3sHostGpuCompute(
    stack,
    "compute",
    props=K3sHostProps(hosts=[host], k3s_token=k3s_token.string_value, kubeconfig_path=KUBECONFIG),
)
HelmProvider(stack, "helm", kubernetes=compute.cluster.access.helm_kubernetes())
GpuOperator(stack, "gpu-operator", props=GpuOperatorProps(cluster=compute.cluster))
TerraformOutput(
    stack, "kubeconfig", value=KUBECONFIG, description="export KUBECONFIG=<this, in the stack's directory>"
)
app.synth()
