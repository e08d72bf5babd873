"""GpuCompute for Proxmox VE: control-plane and GPU-worker VMs with PCIe passthrough, and k3s HA.

The VMs boot an Ubuntu cloud image; cloud-init (a snippet per VM) installs k3s: the first server
initializes embedded etcd, the others join it, and the workers join with the GPU label and taint.
GPUs are passed through by PCI resource mappings, since raw device ids need root password auth and
do not work with API tokens. The GPU Operator installs driver and toolkit inside the VMs.

The package: the props and their checks (``props.py``), the VMs' cloud-init (``cloudinit.py``: user
data, k3s config, kube-vip), the bpg/proxmox resources (``bindings.py``) and, here, the construct.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import yaml
from cdktf import LocalExecProvisioner, Postcondition, TerraformResourceLifecycle
from constructs import Construct

from gpu_constructs.cluster import (
    GPU_LABEL,
    GPU_TAINT,
    GpuCluster,
    KubeAccess,
    Manager,
    k3s_containerd,
)
from gpu_constructs.compute.base import NodeGroup, PlatformFacts, k3s_platform
from gpu_constructs.compute.proxmox import cloudinit
from gpu_constructs.compute.proxmox.bindings import (
    Agent,
    Cpu,
    Disk,
    Dns,
    DownloadFile,
    EfiDisk,
    File,
    FirewallOptions,
    FirewallRule,
    FirewallRules,
    HardwareMappingPci,
    HostPci,
    Initialization,
    IpConfig,
    Ipv4,
    Memory,
    NetworkDevice,
    OperatingSystem,
    PciMap,
    SourceRaw,
    Vm,
)
from gpu_constructs.compute.proxmox.props import (
    CLOUD_INIT_INPUTS,
    CONTROL_PLANE_LABELS,
    K3S_DISABLED,
    SCRATCH_LABEL,
    SCRATCH_MOUNT,
    WORKER_LABELS,
    GpuDevice,
    ProxmoxProps,
    SshHostKey,
    VmSize,
)

__all__ = [
    "CLOUD_INIT_INPUTS",
    "CONTROL_PLANE_LABELS",
    "SCRATCH_LABEL",
    "SCRATCH_MOUNT",
    "GpuDevice",
    "ProxmoxGpuCompute",
    "ProxmoxProps",
    "SshHostKey",
    "VmSize",
    "network_postcondition",
]
from gpu_constructs.hostexec import ScriptRun, run_local_script, script_literal


class ProxmoxGpuCompute(Construct):
    """k3s HA on Proxmox VMs, GPU workers with passthrough NVIDIA GPUs."""

    def __init__(self, scope: Construct, id: str, *, props: ProxmoxProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.image = DownloadFile(
            self,
            "cloud-image",
            node_name=props.node_name,
            datastore_id=props.image_datastore,
            content_type="import",
            url=props.image_url,
            file_name="ubuntu-noble-cloudimg-amd64.qcow2",
            # Proxmox verifies the download against it (download-url's checksum); with overwrite
            # false the provider never compares the URL's size with the stored file's
            # (fwprovider/nodes/resource_download_file.go Read), so a plan never replaces it.
            # A new pin (url and checksum) replaces it; the VMs keep their disks (import_from is
            # read at creation only).
            checksum=props.image_sha256,
            checksum_algorithm="sha256",
            overwrite=False,
        )
        self.gpu_mappings = [
            HardwareMappingPci(
                self,
                f"gpu{index}",
                name=f"gpu{index}",
                comment="GPU passed through to a k3s worker",
                map=[
                    PciMap(
                        id=device.id,
                        node=props.node_name,
                        path=device.path,
                        iommu_group=device.iommu_group,
                        subsystem_id=device.subsystem_id,
                    )
                ],
            )
            for index, device in enumerate(props.gpu_devices)
        ]
        self.control_planes = [
            self._vm(
                props.control_plane_names[i],
                ip,
                props.vm_id_base + 11 + i,
                props.control_plane_size,
                role="server",
                first=i == 0,
            )
            for i, ip in enumerate(props.control_plane_ips)
        ]
        self.workers = [
            self._vm(
                props.worker_names[i], ip, props.vm_id_base + 21 + i, props.worker_size, role="agent", index=i
            )
            for i, ip in enumerate(props.worker_ips)
        ]
        self.kubeconfig = run_local_script(
            self,
            "kubeconfig",
            run=ScriptRun(
                "fetch-kubeconfig.sh",
                {
                    "SSH_USER": "ubuntu",
                    "SSH_HOST": props.control_plane_ips[0],
                    "SSH_KEY": props.ssh_private_key_path,
                    **({"HOST_KEY": key} if (key := props.host_key("cp1")) else {}),
                    "KUBECONFIG_OUT": props.kubeconfig_path,
                    # The VIP when there is one: the kubeconfig then survives the loss of cp1.
                    "API_SERVER": props.server_address,
                    "KNOWN_HOSTS": props.known_hosts,
                    "WAIT_SECONDS": "1200",
                },
            ),
            triggers={"server": self.control_planes[0].id_ref},
            depends_on=[*self.control_planes, *self.workers],
            expect_file=props.kubeconfig_path,
        )
        gpus = props.gpus_per_worker * len(props.worker_ips)
        self.cluster = GpuCluster(
            name=id,
            access=KubeAccess(config_path=props.kubeconfig_path),
            gpu_node_selector=dict([GPU_LABEL]),
            gpu_taint=GPU_TAINT,
            gpu_toleration_taint=GPU_TAINT,
            runtime_class="nvidia",
            driver=Manager.OPERATOR,
            toolkit=Manager.OPERATOR,
            # this cluster's k3s decides the containerd config template, not the library's pin
            containerd=k3s_containerd(props.k3s_version),
            sharing=props.sharing,
            gpu_capacity=gpus * props.sharing.time_slicing_replicas,
            gpus_per_node=props.gpus_per_worker * props.sharing.time_slicing_replicas,
            ready=(self.kubeconfig,),
            # cp1 carries cluster-init, and the kubeconfig (so the helm provider) comes from it.
            # Rebuilt, it boots an empty datastore and k3s starts a new etcd cluster on it instead
            # of rejoining cp2 and cp3: an init node rejoins only with `server:` pointing at a live
            # member in place of `cluster-init` and its db directory deleted (k3s maintainers,
            # k3s-io/k3s discussion #7070), which its first-boot user data cannot know. So a replaced
            # cp1 is a new, empty cluster and everything is installed into it again; the plan lists
            # every release as replaced, the sign to stop unless a new cluster is meant (docs/proxmox-ha.md,
            # "Changing cloud-init inputs"), and with protect_control_plane Terraform refuses that
            # plan: cp2, cp3 and the workers would stay in the old cluster, both announcing the VIP.
            # cp2, cp3 and the workers join the existing cluster: replaced, they leave and rejoin
            # it, and what runs in it stays. With rejoin_first_server cp1 joins too (through cp2):
            # no single VM's rebuild starts a new cluster, and nothing is replaced with one.
            # Terraform evaluates replace_triggered_by against the plan at hand, so dropping or
            # restoring the trigger replaces nothing by itself.
            identity=() if props.rejoin_first_server else (self.control_planes[0],),
        )

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        props = self.props
        cps, workers = props.control_plane_names, props.worker_names
        return (
            NodeGroup(
                "control planes",
                names=cps,
                labels=dict(CONTROL_PLANE_LABELS),
                instance_types=(props.control_plane_size.shape,),
                gpus_per_node=0,
                min_nodes=len(cps),
                max_nodes=len(cps),
                system=True,
            ),
            NodeGroup(
                "gpu workers",
                names=workers,
                labels=dict(WORKER_LABELS),
                taints=(GPU_TAINT,),
                instance_types=(props.worker_size.shape,),
                gpu=True,
                gpus_per_node=props.gpus_per_worker,
                min_nodes=len(workers),
                max_nodes=len(workers),
            ),
        )

    @property
    def platform(self) -> PlatformFacts:
        cluster = self.cluster
        return k3s_platform(
            self.props.k3s_version,
            K3S_DISABLED,
            driver=cluster.driver,
            toolkit=cluster.toolkit,
            etcd_snapshots=self.props.etcd_snapshots.where,
        )

    # --- VMs ----------------------------------------------------------------------------------------------
    def _vm(
        self, name: str, ip: str, vm_id: int, size: VmSize, *, role: str, first: bool = False, index: int = 0
    ) -> Vm:
        props = self.props
        address = f"{ip}/{ipaddress.IPv4Network(props.network).prefixlen}"
        snippet = File(
            self,
            f"{name}-user-data",
            node_name=props.node_name,
            datastore_id=props.snippets_datastore,
            content_type="snippets",
            source_raw=SourceRaw(
                cloudinit.user_data(props, name, ip, role=role, first=first), f"{name}-user-data.yaml"
            ),
            # The user data holds the k3s token and the S3 keys. Snippets are uploaded over SFTP as
            # the provider's ssh user (root here), which chmods the file after the upload
            # (proxmox/ssh/client.go NodeStreamUpload); the reference page's "root@pam only" is
            # about API uploads, which snippets never use.
            file_mode="0600",
        )
        # Proxmox rebuilds the cloud-init drive at every VM start, and without a meta-data file its
        # instance-id is the SHA-1 of the current user data and network config (qemu-server
        # src/PVE/QemuServer/Cloudinit.pm): an edited snippet would look like a new instance to
        # every VM at its next start, and all of them would re-run cloud-init together (a new
        # token stops every server). A fixed instance-id keeps what each VM first booted with;
        # only a rebuilt VM, with a fresh disk, runs the new user data.
        meta_data = File(
            self,
            f"{name}-meta-data",
            node_name=props.node_name,
            datastore_id=props.snippets_datastore,
            content_type="snippets",
            source_raw=SourceRaw(cloudinit.meta_data(name, vm_id), f"{name}-meta-data.yaml"),
            file_mode="0600",
        )
        disks = [
            Disk(
                "scsi0",
                props.vm_datastore,
                size.disk_gb,
                import_from=self.image.id_ref,
                iothread=True,
                discard="on",
            )
        ]
        hostpci: list[HostPci] = []
        memory = Memory(dedicated=size.memory_gb * 1024)
        cpu = Cpu(cores=size.vcpus, type="host")
        if role == "agent":
            disks.append(
                Disk(
                    "scsi1",
                    props.scratch_datastore or props.vm_datastore,
                    props.scratch_gb,
                    iothread=True,
                    ssd=True,
                    discard="on",
                )
            )
            first_gpu = index * props.gpus_per_worker
            hostpci = [
                HostPci(
                    f"hostpci{n}",
                    self.gpu_mappings[first_gpu + n].get_string_attribute("name"),
                    pcie=True,
                    rombar=True,
                )
                for n in range(props.gpus_per_worker)
            ]
            if props.hugepages:
                memory = Memory(dedicated=size.memory_gb * 1024, hugepages="1024", keep_hugepages=True)
            if props.hugepages or props.cpu_pinning:
                # hugepages require cpu.numa (provider docs, memory.hugepages); pinning keeps it too.
                low, high = props.pinned_cores(index)
                cpu = Cpu(
                    cores=size.vcpus,
                    type="host",
                    numa=True,
                    affinity=f"{low}-{high}" if props.cpu_pinning else None,
                )
        vm = Vm(
            self,
            name,
            node_name=props.node_name,
            name=name,
            vm_id=vm_id,
            description=f"k3s {role} ({'GPU worker' if role == 'agent' else 'control plane'})",
            tags=["k3s", "gpu" if role == "agent" else "control-plane"],
            cpu=cpu,
            memory=memory,
            efi_disk=EfiDisk(datastore_id=props.vm_datastore, type="4m"),
            disk=disks,
            network_device=[NetworkDevice(bridge=props.bridge, firewall=props.firewall or None)],
            initialization=Initialization(
                datastore_id=props.vm_datastore,
                ip_config=[IpConfig(Ipv4(address, props.gateway))],
                user_data_file_id=snippet.id_ref,
                meta_data_file_id=meta_data.id_ref,
                dns=Dns(servers=props.dns_servers),
            ),
            hostpci=hostpci,
            agent=Agent(enabled=True),
            operating_system=OperatingSystem("l26"),
            # Terraform updates all VMs of a plan in parallel: with the provider's default (true) a
            # size or hardware change powers cp1, cp2 and cp3 off together (etcd loses quorum) and
            # every GPU worker with them. false leaves such a change pending in the VM's config
            # with a warning, for the node-by-node reboot (docs/proxmox-ha.md), and fails a change
            # that cannot wait for one (bpg/proxmox v0.111.1 proxmoxtf/resource/vm/vm.go,
            # vmPowerOffForPendingChanges, vmFinalizePowerState, rebootAfterUpdateDisabledError).
            reboot_after_update=False,
            lifecycle=TerraformResourceLifecycle(
                ignore_changes=list(CLOUD_INIT_INPUTS),
                postcondition=[network_postcondition(name, address, props.gateway, props.dns_servers)],
                # Terraform refuses at plan to destroy it, a replacement and -replace included
                # ("Instance cannot be destroyed"), before any release is uninstalled.
                prevent_destroy=(role == "server" and props.protect_control_plane) or None,
            ),
            provisioners=[self.delete_node_provisioner()],
        )
        if props.firewall:
            self._firewall(name, vm_id, vm)
        return vm

    def _firewall(self, name: str, vm_id: int, vm: Vm) -> None:
        """The VM's firewall: rules first, then the switch, so it never drops with no rules. Proxmox
        deletes a VM's firewall file with the VM, and these name the VM by its literal id, so both
        are replaced with it (a replaced VM plans a new, unknown ``id``): a rebuilt VM never runs
        with its network device's firewall on and no rules, open to every network."""
        props = self.props
        with_vm = TerraformResourceLifecycle(
            replace_triggered_by=[f"{vm.terraform_resource_type}.{vm.friendly_unique_id}.id"]
        )
        rules = FirewallRules(
            self,
            f"{name}-firewall-rules",
            node_name=props.node_name,
            vm_id=vm_id,
            rule=[
                FirewallRule("in", "ACCEPT", "the cluster's nodes", source=props.network),
                FirewallRule(
                    "in",
                    "ACCEPT",
                    "SSH and the Kubernetes API from the admin networks",
                    source=",".join(props.admin_cidrs),
                    proto="tcp",
                    dport="22,6443",
                ),
                FirewallRule("in", "ACCEPT", "HTTP and HTTPS to the ingress", proto="tcp", dport="80,443"),
                FirewallRule("in", "ACCEPT", "ICMP (path MTU discovery, ping)", proto="icmp"),
            ],
            depends_on=[vm],
            lifecycle=with_vm,
        )
        FirewallOptions(
            self,
            f"{name}-firewall",
            node_name=props.node_name,
            vm_id=vm_id,
            enabled=True,
            input_policy="DROP",
            output_policy="ACCEPT",
            depends_on=[rules],
            lifecycle=with_vm,
        )

    def delete_node_provisioner(self) -> LocalExecProvisioner:
        """Before a VM is destroyed (a rebuild with ``-replace`` or a destroy), drain it and delete
        its Node: k3s refuses a rebuilt node of the same name until then (its node password).
        A destroy-time provisioner may refer to ``self`` and ``path`` only (Terraform
        internal/configs/provisioner.go, onlySelfRefs), so the node name is ``self.name`` and the
        kubeconfig a path. The script lets the destroy go on when the API does not answer (a
        whole-stack destroy, where the servers go down in parallel), after printing the command to
        run by hand; a refused delete stops it.

        ``WARN_LOCAL_VOLUMES`` names, before the drain, the bound claims whose local-path volumes are
        on the VM's disk, which goes with it: on a worker the notebooks' ``fast-scratch`` volumes, on
        a server its ``server-local`` ones (the hub's database, the monitoring volumes)."""
        return LocalExecProvisioner(
            type="local-exec",
            when="destroy",
            command=script_literal("delete-node.sh"),
            interpreter=["bash", "-c"],
            environment={
                "KUBECONFIG": self.props.kubeconfig_path,
                "NODE": "${self.name}",
                "WARN_LOCAL_VOLUMES": "1",
            },
        )

    def ansible_inventory(self) -> str:
        """An Ansible inventory of the nodes, for day-2 playbooks."""
        props = self.props
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": props.ssh_private_key_path,
                },
                "children": {
                    "control_plane": {
                        "hosts": {
                            name: {"ansible_host": ip}
                            for name, ip in zip(
                                props.control_plane_names, props.control_plane_ips, strict=True
                            )
                        }
                    },
                    "gpu_workers": {
                        "hosts": {
                            name: {"ansible_host": ip}
                            for name, ip in zip(props.worker_names, props.worker_ips, strict=True)
                        }
                    },
                },
            }
        }
        return yaml.safe_dump(inventory, sort_keys=True)


def network_postcondition(name: str, address: str, gateway: str, dns_servers: Sequence[str]) -> Postcondition:
    """Refuse a plan whose address, gateway or DNS servers for the VM differ from what it was
    built with. With ip_config and dns ignored, ``self`` keeps the values the provider reads back
    from the VM's config (bpg/proxmox v0.111.1 vm.go: the address as stored, the nameserver split
    at spaces); a new or replaced VM plans the configured ones and passes."""
    servers = " ".join(dns_servers)
    ipv4 = "self.initialization[0].ip_config[0].ipv4[0]"
    return Postcondition(
        condition=(
            f'${{{ipv4}.address == "{address}" && {ipv4}.gateway == "{gateway}" && '
            f'join(" ", self.initialization[0].dns[0].servers) == "{servers}"}}'
        ),
        error_message=(
            f"{name} was built with another address, gateway or DNS servers than the settings now give "
            f"({address} via {gateway}, DNS {servers}); cloud-init applies network settings only to a "
            "new instance, so the running VM would keep its old ones. A new gateway or DNS server: "
            "change it in place on every node (qm set --nameserver/--ipconfig0 and the guest's "
            'netplan, docs/proxmox-ha.md "A new gateway or DNS server, in place"). A new address: '
            'rebuild the node as "Changing cloud-init inputs: node by node" says, '
            "terraform apply -replace=ADDRESS (its firewall is replaced with it), one node at a time "
            "(never cp1: a new cp1 is a new cluster)."
        ),
    )
