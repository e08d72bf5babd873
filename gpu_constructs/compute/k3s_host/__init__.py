"""GpuCompute for existing Ubuntu hosts reached over SSH: NVIDIA driver, container toolkit and k3s.

The first host becomes the k3s server; any further hosts join it as agents with the same GPU
bootstrap. Each step is an idempotent script run by a terraform_data (see :mod:`gpu_constructs.hostexec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cdktf import DataResource, Fn, LocalExecProvisioner, TerraformIterator, Token
from constructs import Construct

from gpu_constructs import validate, versions
from gpu_constructs.cluster import (
    GPU_LABEL,
    GPU_TAINT,
    GpuCluster,
    GpuSharing,
    KubeAccess,
    Manager,
    k3s_containerd,
)
from gpu_constructs.compute.base import NodeGroup, PlatformFacts, k3s_platform
from gpu_constructs.compute.k3s.etcd import SECRET_FLAGS, EtcdSnapshots
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import (
    ScriptRun,
    SshHost,
    env_script_command,
    run_local_script,
    run_scripts,
    script_literal,
)
from gpu_constructs.providers.external import DataExternal

OPEN_MODULES_SINCE = 515
"""The first driver branch with NVIDIA's open GPU kernel modules (production-ready since 515)."""
NODE_SERVICES = ("k3s", "k3s-agent")
"""The systemd services k3s' install.sh creates for a server and an agent (k3s.service,
k3s-agent.service): what runs a node, and what must wait for its disks at boot."""


@dataclass(frozen=True)
class K3sHostProps:
    """Settings of a k3s cluster on existing hosts."""

    hosts: Sequence[SshHost]
    """The hosts, server first. At least one."""
    k3s_token: str
    """The shared cluster secret: a reference to a sensitive variable, never a literal."""
    kubeconfig_path: str
    """Where a copy of the admin kubeconfig is written on the machine that runs Terraform, for
    kubectl; the stack itself never reads it."""
    k3s_version: str = versions.K3S.version
    """k3s release to install. Default: the pin in versions.py."""
    gpu_enabled: bool = True
    """Install the NVIDIA driver and toolkit and label GPU nodes. False runs the cluster without GPUs."""
    driver_branch: str = versions.NVIDIA_DRIVER_BRANCH.version
    """NVIDIA server driver branch from the Ubuntu archive (the seed's 545 is end-of-life)."""
    driver_kernel_modules: str = "open"
    """``open``: NVIDIA's open GPU kernel modules, its default since the 560 driver and required for
    Blackwell; they support Turing (RTX 20xx, T4) and newer. ``proprietary`` for older GPUs (Volta
    V100, Pascal). With Secure Boot on, either module must be signed by an enrolled key
    (docs/single-node.md, "What the host needs first")."""
    database_instances: int = 0
    """How many instances the stack's CloudNativePG cluster has (0: none). CloudNativePG gives the
    primary a PodDisruptionBudget of minAvailable 1 whatever the instance count, and with one
    instance there is no standby to switch over to (pkg/specs/poddisruptionbudget.go,
    BuildPrimaryPodDisruptionBudget): a drain of its node can never evict it."""
    reboot_wait_seconds: int = 900
    """How long the driver step waits for a host it rebooted to come back (its boot id changed)."""
    toolkit_version: str = versions.NVIDIA_CONTAINER_TOOLKIT.version
    """NVIDIA Container Toolkit release."""
    taint_gpu_nodes: bool = False
    """Taint GPU nodes ``nvidia.com/gpu=true:NoSchedule``. Off by default: on a single host every pod
    runs on the GPU node, and the taint would keep Vault, PostgreSQL and ingress Pending."""
    gpus_per_node: int = 1
    """GPUs in each host; bounds the GPU pods the stack asks for."""
    sharing: GpuSharing = field(default_factory=GpuSharing)
    """Time-slicing and MIG."""
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    verify_host_keys: bool = True
    """Refuse hosts without a ``host_key``: every SSH connection of the stack (Terraform's and the
    local scripts') checks the host's key, so a host that answers with another key is never handed
    the cluster token. False connects to whatever answers at the address (a lab that rebuilds hosts
    often); the first connection then trusts any key."""
    etcd_snapshots: EtcdSnapshots | None = None
    """Scheduled snapshots of the server's datastore, with ``s3`` sent off the node. They need embedded
    etcd, so the server runs with ``cluster-init``: k3s moves an existing SQLite datastore into etcd
    when it restarts with it (docs.k3s.io/datastore/ha-embedded, "Existing single-node clusters").
    None keeps k3s' default SQLite, which k3s cannot snapshot."""
    disable: tuple[str, ...] = ("traefik", "local-storage")
    """Bundled k3s components to switch off. Traefik is installed by Networking with a pinned chart;
    local-storage (k3s' local-path provisioner and its ``local-path`` class, marked default) by Storage,
    whose provisioner knows every tier's directory. Keeping it would make two default classes."""

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ConfigError("hosts", [], "give at least one host; the first one runs the k3s server")
        if not validate.is_reference(self.k3s_token):
            raise ConfigError(
                "k3s_token",
                "<literal>",
                "pass a reference to a sensitive Terraform variable, never a literal secret",
            )
        validate.version("k3s_version", self.k3s_version, r"v\d+\.\d+\.\d+\+k3s\d+", "v1.35.5+k3s1")
        validate.version("driver_branch", self.driver_branch, r"\d{3}", "580")
        validate.one_of("driver_kernel_modules", self.driver_kernel_modules, ("open", "proprietary"))
        if self.driver_kernel_modules == "open" and int(self.driver_branch) < OPEN_MODULES_SINCE:
            raise ConfigError(
                "driver_branch",
                self.driver_branch,
                f"NVIDIA ships open kernel modules from branch {OPEN_MODULES_SINCE}; use a newer branch "
                "or driver_kernel_modules='proprietary'",
            )
        if self.verify_host_keys:
            for index, host in enumerate(self.hosts):
                if host.host_key is None:
                    raise ConfigError(
                        f"hosts[{index}].host_key",
                        None,
                        f"give the public key of {host.address} (ssh-keyscan <address>, "
                        "checked against the host's console), or set verify_host_keys=False to connect "
                        "without checking it",
                    )
        validate.int_range("reboot_wait_seconds", self.reboot_wait_seconds, 60, 3600)
        validate.version("toolkit_version", self.toolkit_version, r"\d+\.\d+\.\d+", "1.20.0")
        validate.int_range("gpus_per_node", self.gpus_per_node, 1, 16)
        cluster = validate.cidr("cluster_cidr", self.cluster_cidr)
        service = validate.cidr("service_cidr", self.service_cidr)
        if cluster.overlaps(service):
            raise ConfigError(
                "service_cidr",
                self.service_cidr,
                f"it overlaps cluster_cidr {self.cluster_cidr}; pick disjoint networks",
            )
        if self.etcd_snapshots is not None:
            self.etcd_snapshots.check()
            # hosts[0] is the only server, so it alone prunes the S3 folder; and no step writes the
            # in-cluster S3 Secret here: the S3 settings go into the server's config.yaml.
            if self.etcd_snapshots.servers != 1:
                raise ConfigError(
                    "etcd_snapshots.servers",
                    self.etcd_snapshots.servers,
                    "leave it at 1: hosts[0] is the one k3s server, the other hosts are agents",
                )
            if self.etcd_snapshots.in_cluster_secret:
                raise ConfigError(
                    "etcd_snapshots.in_cluster_secret",
                    True,
                    "leave it False: k3s-install.sh writes the S3 settings into the server's config.yaml",
                )
        for item in self.disable:
            validate.one_of(
                "disable", item, ("traefik", "servicelb", "local-storage", "metrics-server", "coredns")
            )


def etcd_env_name(flag: str) -> str:
    """The environment variable k3s-install.sh reads a k3s setting from: etcd-s3-bucket, ETCD_S3_BUCKET."""
    return flag.upper().replace("-", "_")


class K3sHostGpuCompute(Construct):
    """k3s with NVIDIA GPU support on existing Ubuntu hosts."""

    cluster: GpuCluster
    server: SshHost
    datastore: DataResource
    kubeconfig: DataResource
    """Writes a copy of the admin kubeconfig for kubectl; the providers never read it."""
    cluster_ca: DataExternal
    node_labels: DataResource
    """The step that keeps every node's labels and taints as the settings declare them."""

    def __init__(self, scope: Construct, id: str, *, props: K3sHostProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.server = props.hosts[0]
        server_url = f"https://{self.server.address}:6443"
        # What stands for the cluster: the k3s datastore on the server host. The server's k3s step
        # re-runs install.sh on any change to its settings or version, and that is an upgrade or a
        # reconfiguration, not a new cluster: install.sh on an installed host keeps
        # /var/lib/rancher/k3s and the datastore in it (only k3s-uninstall.sh removes them; k3s-io/k3s
        # install.sh), so what runs in the cluster, the database's volumes among it, stays. Were the
        # releases replaced with that step, a version bump would uninstall them, and uninstalling the
        # PostgreSQL cluster deletes its volumes. A new datastore comes with another server host
        # (its address); after reinstalling the host at the same address, `-replace` this resource.
        # Replaced, the k3s steps and every release re-run or are replaced with it.
        self.datastore = DataResource(self, "cluster", triggers_replace={"server": self.server.address})

        node_steps: list[DataResource] = []
        self.reboot_steps: list[DataResource] = []
        """The steps that may reboot a host (the driver install, which waits for the host to be
        back): a later step on the same host orders itself after them."""
        for index, host in enumerate(props.hosts):
            role = "server" if index == 0 else "agent"
            name = "server" if index == 0 else f"agent-{index}"
            after: list[DataResource] = []
            if props.gpu_enabled:
                driver = {
                    "DRIVER_BRANCH": props.driver_branch,
                    "DRIVER_KERNEL_MODULES": props.driver_kernel_modules,
                }
                # The node's pods are stopped cleanly (the database, Vault, the app) before the
                # driver changes under them and the host reboots, and it takes pods again only
                # once the driver answers after the boot. Drained from the server (the only host
                # with the cluster's admin kubeconfig), over SSH from the machine that runs
                # Terraform; a driver that stays, or a node that has not joined yet, is left alone.
                drain = {
                    **self.server.local_ssh_env(),
                    **{f"NODE_{key}": value for key, value in host.local_ssh_env().items()},
                }
                self.reboot_steps.append(
                    run_scripts(
                        self,
                        f"{name}-gpu-driver",
                        host=host,
                        runs=[
                            ScriptRun("gpu-detect.sh", {"REQUIRE_GPU": "1"}),
                            ScriptRun("nvidia-driver.sh", driver),
                        ],
                        before_local=ScriptRun(
                            "node-drain.sh",
                            {
                                **drain,
                                **driver,
                                "MODE": "drain",
                                # One node, or a single-instance database whose primary budget
                                # (minAvailable 1 of 1) no eviction can meet on any host count:
                                # delete rather than evict (node-drain.sh).
                                "BYPASS_PDB": "1"
                                if len(props.hosts) == 1 or props.database_instances == 1
                                else "0",
                            },
                        ),
                        # A driver that needs a reboot reboots the host; the next step must not
                        # connect before it is back (remote-exec would connect to the dying host),
                        # and the node is uncordoned only once the driver works after it.
                        then_local=[
                            ScriptRun(
                                "wait-for-reboot.sh",
                                {**host.local_ssh_env(), "WAIT_SECONDS": str(props.reboot_wait_seconds)},
                            ),
                            ScriptRun("node-drain.sh", {**drain, "MODE": "uncordon"}),
                        ],
                        # One host after the other, server first: a driver upgrade drains and
                        # reboots one node at a time, and no drain asks a server that is itself
                        # rebooting for its driver.
                        depends_on=self.reboot_steps[-1:],
                    )
                )
                after.append(self.reboot_steps[-1])
            runs = []
            if props.gpu_enabled:
                runs.append(ScriptRun("nvidia-toolkit.sh", {"TOOLKIT_VERSION": props.toolkit_version}))
            runs.append(self._k3s_run(role, host, server_url))
            if index > 0:
                after.append(node_steps[0])
            node_steps.append(
                run_scripts(
                    self,
                    f"{name}-k3s",
                    host=host,
                    runs=runs,
                    depends_on=after,
                    extra_triggers={"cluster": self.datastore.id, **self._etcd_s3_triggers(role)},
                )
            )

        self.agents_leave = self._agents_leave(node_steps)

        # k3s applies node-label/node-taint at a node's first registration only: later changes of
        # the settings reach the nodes through the API, from the server.
        labels, taints = self._node_labels_and_taints()
        self.node_labels = run_scripts(
            self,
            "node-labels",
            host=self.server,
            runs=[
                ScriptRun(
                    "node-labels.sh",
                    {
                        "NODE_IPS": " ".join(host.address for host in props.hosts),
                        "NODE_LABELS": " ".join(labels),
                        "NODE_TAINTS": " ".join(taints),
                    },
                )
            ],
            # A reinstalled k3s (a replaced node step) has nodes that registered afresh: label them.
            extra_triggers={f"k3s-{index}": step.id for index, step in enumerate(node_steps)},
            depends_on=node_steps,
        )

        # A copy of the admin kubeconfig for kubectl and `make verify` on this machine, written
        # when the server's k3s is installed or changed. Nothing in the stack reads it.
        self.kubeconfig = run_local_script(
            self,
            "kubeconfig",
            run=ScriptRun(
                "fetch-kubeconfig.sh",
                {**self.server.local_ssh_env(), "KUBECONFIG_OUT": props.kubeconfig_path},
            ),
            triggers={"server": node_steps[0].id},
            depends_on=node_steps,
        )

        # The providers reach the API with what the server holds now, read over SSH (with the
        # pinned host key) at every plan and apply, from any machine with the SSH key: the cluster
        # CA from an external data source (provider configuration is evaluated at plan: helm
        # v3.1.1 helm/provider.go Configure), the admin client certificate and key from an exec
        # credential plugin that client-go runs when the provider first calls the API
        # (helm/kubeconfig.go NewKubeConfig sets overrides.AuthInfo.Exec), so the key is never in
        # a file, the state or the plan. A kubeconfig copied once would expire with its 365-day
        # client certificate (k3s renews it on the server and rewrites k3s.yaml when it starts),
        # and a clean checkout or a CI runner would have none.
        # The CA's read is keyed on the cluster step alone: it exists in every state this stack has
        # written (the k3s steps are keyed on it) and is replaced only with the datastore (a new
        # server address or a `-replace`), never by a k3s upgrade or reconfiguration. So the query
        # is known on every plan of a deployed cluster and the helm provider is configured with its
        # CA before it refreshes the releases: with the CA unknown, helm v3.1.1 verifies the API
        # against the system roots, the existence check fails and Read removes the release from
        # the state before it looks at the error (helm/resource_helm_release.go Read,
        # hashicorp/terraform-provider-helm#1669). A step made after the server's k3s step would
        # be missing from older states, and one keyed on that step would be replaced by an
        # upgrade: either leaves the CA unknown at plan while releases are in the state.
        # On a first apply the query is unknown at plan, so the CA is read during the apply
        # (developer.hashicorp.com/terraform/language/data-sources, "Data resource behavior"),
        # as soon as the cluster step is made and while k3s may still be being installed:
        # kube-access.sh then waits for k3s.yaml, up to the driver, reboot and k3s steps' time, and
        # only while a step of the stack runs on the server or it reboots: Terraform's walk skips
        # only what depends on a failed step (internal/dag/walk.go), so after a failed driver step
        # the read would otherwise hold the apply for all that time, and a plan of such a state
        # (the query known, so read at plan: planDataSource in
        # internal/terraform/node_resource_abstract_instance.go) would wait it out and fail.
        # hashicorp/external v2.3.5 bounds nothing itself (exec.CommandContext with the request's
        # context, no timeout setting; internal/provider/data_source.go).
        ca_wait_seconds = props.reboot_wait_seconds + 1800

        def kube_access(mode: str, **extra: str) -> list[str]:
            return env_script_command("kube-access.sh", {**self.server.local_ssh_env(), **extra}, mode)

        self.cluster_ca = DataExternal(
            self,
            "cluster-ca",
            program=kube_access("ca", CA_WAIT_SECONDS=str(ca_wait_seconds)),
            query={"cluster": self.datastore.id},
        )

        slots = len(props.hosts) * props.gpus_per_node * props.sharing.time_slicing_replicas
        self.cluster = GpuCluster(
            name=id,
            access=KubeAccess(
                host=server_url,
                cluster_ca_certificate=Fn.base64decode(self.cluster_ca.result("ca_base64")),
                exec_api_version="client.authentication.k8s.io/v1",
                exec_command="env",
                exec_args=tuple(kube_access("credential")[1:]),
            ),
            gpu_node_selector=dict([GPU_LABEL]),
            gpu_taint=GPU_TAINT if props.taint_gpu_nodes else None,
            gpu_toleration_taint=GPU_TAINT,
            runtime_class="nvidia",
            driver=Manager.HOST,
            toolkit=Manager.HOST,
            containerd=k3s_containerd(props.k3s_version),
            sharing=props.sharing,
            gpu_capacity=slots if props.gpu_enabled else 0,
            # The releases come after the agents' leave step, so a destroy of the whole stack
            # uninstalls them while every node still serves, and only then drains the agents.
            ready=(node_steps[0], self.node_labels, self.agents_leave),
            identity=(self.datastore,),
        )

    def _agents_leave(self, node_steps: Sequence[DataResource]) -> DataResource:
        """One instance per agent, keyed by its address, that does nothing when made and, when the
        host leaves the stack (dropped from ``hosts``, its address changed, or a destroy of the
        whole stack), drains its node through the server, deletes the Node and uninstalls
        k3s-agent on the host (delete-node.sh).

        ``for_each`` over the agents' addresses, not a resource per agent: Terraform runs a
        destroy-time provisioner only while its resource block is in the configuration ("If a
        resource block with a destroy-time provisioner is removed entirely from the configuration,
        its provisioner configurations are removed along with it", Terraform docs, "Destroy-Time
        Provisioners"), and a block per agent goes with the agent; an instance of a block that
        stays is destroyed with its provisioner. Keyed by address, an agent dropped from the middle
        of ``hosts`` leaves by itself, while the ones after it keep their instances (an index would
        move them and uninstall a host that stays). A destroy-time provisioner may reference only
        ``self``, ``count.index`` and ``each.key`` (Terraform internal/configs/provisioner.go,
        onlySelfRefs), so everything the script needs is in the instance's ``input``, updated in
        place when a setting changes. Depending on every node's k3s step, it is destroyed before
        them and before the server's; nothing on a host changes when those are destroyed."""
        agents = list(self.props.hosts[1:])
        addresses = [host.address for host in agents]

        each = TerraformIterator.from_list(addresses)

        def by_agent(values: list[str]) -> str:
            return Fn.lookup(Fn.zipmap(addresses, values), Token.as_string(each.key))

        server = {key: value for key, value in self.server.local_ssh_env().items() if key != "HOST_KEY"}
        settings = {
            **server,
            "HOST_KEY": self.server.pinned_host_key or "",
            "NODE_IP": Token.as_string(each.key),
            "NODE_SSH_USER": by_agent([host.user for host in agents]),
            "NODE_SSH_KEY": by_agent([host.private_key_path for host in agents]),
            "NODE_HOST_KEY": by_agent([host.pinned_host_key or "" for host in agents]),
            # A node that does not drain in this time (a PodDisruptionBudget no eviction can meet,
            # such as a single-instance database's primary) is deleted anyway.
            "DRAIN_SECONDS": "300",
            # The server is never destroyed by the stack: one that does not answer is an outage to
            # fix, not a cluster that is gone, so the step fails and stays for the next apply.
            "API_GONE": "fail",
            "UNINSTALL_AGENT": "1",
            "WARN_LOCAL_VOLUMES": "1",
        }
        return DataResource(
            self,
            "agents-leave",
            for_each=each,
            input=settings,
            # A new datastore (another server) is a new cluster: the agents leave the old one first
            # and are uninstalled, so their k3s steps, replaced with it, join the new one afresh
            # rather than with the old cluster's certificates (an agent started with another
            # cluster's certificates does not join cleanly: k3s-io/k3s#2034). A reinstalled server
            # without k3s has nothing to drain; the uninstall still runs.
            triggers_replace={"cluster": self.datastore.id},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    when="destroy",
                    command=script_literal("delete-node.sh"),
                    interpreter=["bash", "-c"],
                    environment={key: f"${{self.input.{key}}}" for key in sorted(settings)},
                )
            ],
            depends_on=list(node_steps),
        )

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        """Every host is one node, each with the GPU bootstrap (or none of them)."""
        props = self.props
        gpu = props.gpu_enabled
        return (
            NodeGroup(
                "hosts",
                labels=dict([GPU_LABEL]) if gpu else {},
                taints=(GPU_TAINT,) if gpu and props.taint_gpu_nodes else (),
                gpu=gpu,
                gpus_per_node=props.gpus_per_node if gpu else 0,
                min_nodes=len(props.hosts),
                max_nodes=len(props.hosts),
            ),
        )

    @property
    def platform(self) -> PlatformFacts:
        cluster = self.cluster
        snapshots = self.props.etcd_snapshots
        return k3s_platform(
            self.props.k3s_version,
            self.props.disable,
            driver=cluster.driver,
            toolkit=cluster.toolkit,
            etcd_snapshots=None if snapshots is None else snapshots.where,
        )

    @property
    def trusted_cidrs(self) -> tuple[str, ...]:
        """Networks that reach cluster-internal ports: the nodes, pods and services."""
        nodes = tuple(f"{host.address}/32" for host in self.props.hosts)
        return (*nodes, self.props.cluster_cidr, self.props.service_cidr)

    def _node_labels_and_taints(self) -> tuple[list[str], list[str]]:
        """The labels and taints every node gets, as ``key=value`` and ``key=value:Effect``."""
        if not self.props.gpu_enabled:
            return [], []
        return ["=".join(GPU_LABEL)], [str(GPU_TAINT)] if self.props.taint_gpu_nodes else []

    def _etcd_s3_triggers(self, role: str) -> dict[str, str]:
        """New S3 keys re-run the server's step, so they reach config.yaml; only their hash is kept."""
        snapshots = self.props.etcd_snapshots
        if role != "server" or snapshots is None or snapshots.s3 is None:
            return {}
        return {"etcd_s3_keys_sha256": Fn.sha256(f"{snapshots.s3.access_key}:{snapshots.s3.secret_key}")}

    def _k3s_run(self, role: str, host: SshHost, server_url: str) -> ScriptRun:
        props = self.props
        env = {"K3S_ROLE": role, "K3S_VERSION": props.k3s_version, "NODE_IP": host.address}
        labels, taints = self._node_labels_and_taints()
        if labels:
            env["NODE_LABELS"] = " ".join(labels)
        if taints:
            env["NODE_TAINTS"] = " ".join(taints)
        if role == "server":
            env["CLUSTER_CIDR"] = props.cluster_cidr
            env["SERVICE_CIDR"] = props.service_cidr
            if props.disable:
                env["DISABLE"] = " ".join(props.disable)
        else:
            env["K3S_URL"] = server_url
        secret_env = {"K3S_TOKEN": props.k3s_token}
        if role == "server" and props.etcd_snapshots is not None:
            # k3s-install.sh writes each setting NAME as ETCD_... below into config.yaml; the S3 keys
            # go through the secrets file with the token.
            for name, value in props.etcd_snapshots.k3s_flags().items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                (secret_env if name in SECRET_FLAGS else env)[etcd_env_name(name)] = text
        return ScriptRun("k3s-install.sh", env, secret_env=secret_env)
