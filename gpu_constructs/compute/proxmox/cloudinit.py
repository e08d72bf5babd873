"""The VMs' cloud-init: the NoCloud meta-data and the cloud-config user data that installs k3s,
with the k3s config file and kube-vip's manifests for the servers."""

from __future__ import annotations

from typing import Any

import yaml
from cdktf import Fn, Token

from gpu_constructs import validate, versions
from gpu_constructs.cluster import GPU_TAINT
from gpu_constructs.compute.proxmox.props import (
    K3S_DISABLED,
    SCRATCH_DEVICE,
    SCRATCH_MOUNT,
    WORKER_LABELS,
    ProxmoxProps,
)


def meta_data(name: str, vm_id: int) -> str:
    """The NoCloud meta-data: an instance-id that depends on the VM alone, never on its user data."""
    return yaml.safe_dump({"instance-id": f"{name}-{vm_id}", "local-hostname": name}, sort_keys=True)


def k3s_config(props: ProxmoxProps, ip: str, *, role: str, first: bool) -> dict[str, Any]:
    """The k3s config file of the node at ``ip``: a server (the first initializes etcd) or a GPU worker."""
    config: dict[str, Any] = {"token": props.k3s_token, "node-ip": ip}
    if role == "server" and props.k3s_agent_token:
        config["agent-token"] = props.k3s_agent_token
    elif role != "server" and props.k3s_agent_token:
        config["token"] = props.k3s_agent_token
    if role == "server":
        config.update(
            {
                "tls-san": sorted({ip, props.server_address}),
                "cluster-cidr": props.cluster_cidr,
                "service-cidr": props.service_cidr,
                "disable": list(K3S_DISABLED),
                "write-kubeconfig-mode": "0600",
            }
        )
        config.update(props.etcd_snapshots.k3s_flags())
        if first and not props.rejoin_first_server:
            config["cluster-init"] = True
        else:
            config["server"] = f"https://{join_address(props, first=first)}:6443"
    else:
        config["server"] = f"https://{props.server_address}:6443"
        config["node-label"] = ["=".join(label) for label in WORKER_LABELS]
        config["node-taint"] = [str(GPU_TAINT)]
    return config


def join_address(props: ProxmoxProps, *, first: bool) -> str:
    """The server a joining server registers through: cp1, or for cp1 itself (rejoin_first_server)
    cp2. A server that joins with an empty datastore becomes a new etcd member of the cluster it
    reaches; an init node rejoins only so, with ``server:`` in place of ``cluster-init`` and its db
    directory gone (k3s-io/k3s discussion #7070, issue #10362; k3s PR #13624: a removed init node
    must be given "either manual removal of DB files to create a new cluster, or setting server
    address to join an existing cluster")."""
    return props.control_plane_ips[1] if first else props.control_plane_ips[0]


def user_data(props: ProxmoxProps, name: str, ip: str, *, role: str, first: bool) -> str:
    """The cloud-config that builds the node ``name``: its user, packages, host key, k3s config, the
    workers' scratch disk and, on the servers, kube-vip; then it installs k3s."""
    install = (
        f"curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION='{props.k3s_version}' "
        f"INSTALL_K3S_EXEC='{role}' sh -"
    )
    document: dict[str, Any] = {
        "hostname": name,
        "users": [
            {
                "name": "ubuntu",
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [_yaml_string(props.ssh_public_key)],
            }
        ],
        "package_update": True,
        "packages": ["qemu-guest-agent", "nfs-common"],
        "write_files": [
            {
                "path": "/etc/rancher/k3s/config.yaml",
                "permissions": "0600",
                "content": yaml.safe_dump(k3s_config(props, ip, role=role, first=first), sort_keys=True),
            },
            {
                "path": "/etc/modules-load.d/k3s.conf",
                "content": "br_netfilter\noverlay\n",
            },
        ],
        "runcmd": [
            "systemctl enable --now qemu-guest-agent",
            # modprobe takes one module and its parameters; -a loads every name given.
            "modprobe -a br_netfilter overlay",
            "swapoff -a",
        ],
    }
    host_key = props.ssh_host_keys.get(name)
    if host_key:
        # The key Terraform checks on every connection (write_files runs before cloud-init's
        # ssh module, which keeps keys with ssh_deletekeys false and generates no other type
        # with ssh_genkeytypes empty, so the host offers this key only). base64 keeps the
        # multi-line key one YAML scalar after Terraform fills it in.
        document["ssh_deletekeys"] = False
        document["ssh_genkeytypes"] = []
        document["write_files"][:0] = [
            {
                "path": "/etc/ssh/ssh_host_ed25519_key",
                "permissions": "0600",
                "encoding": "b64",
                "content": f"${{base64encode({_expression(host_key.private_key)})}}",
            },
            {
                "path": "/etc/ssh/ssh_host_ed25519_key.pub",
                "permissions": "0644",
                "content": f"{host_key.public_key} root@{name}\n",
            },
        ]
    if role == "agent":
        # The scratch disk by its stable id (scsi1: QEMU names it after the drive), not /dev/sdb,
        # which another disk can take. k3s starts only with scratch mounted: with nofail alone,
        # a boot without the disk would let the fast-scratch class write into /mnt/scratch on
        # the OS disk while the node still carries the scratch-disk label.
        document["fs_setup"] = [
            {"label": "scratch", "filesystem": "ext4", "device": SCRATCH_DEVICE, "partition": "auto"}
        ]
        document["mounts"] = [["LABEL=scratch", SCRATCH_MOUNT, "ext4", "defaults,nofail", "0", "2"]]
        document["write_files"].append(
            {
                "path": "/etc/systemd/system/k3s-agent.service.d/scratch.conf",
                "content": f"[Unit]\nRequiresMountsFor={SCRATCH_MOUNT}\n",
            }
        )
    if role == "server" and props.api_vip:
        document["write_files"].append(
            {
                "path": "/var/lib/rancher/k3s/server/manifests/kube-vip.yaml",
                "content": yaml.safe_dump_all(kube_vip_manifests(props.api_vip), sort_keys=True),
            }
        )
    if role == "server" and (not first or props.rejoin_first_server):
        # Join only once the server it joins through answers.
        document["runcmd"].append(
            f"until curl -ksf https://{join_address(props, first=first)}:6443/ping; do sleep 10; done"
        )
    elif role == "agent":
        document["runcmd"].append(
            f"until curl -ksf https://{props.server_address}:6443/ping; do sleep 10; done"
        )
    document["runcmd"].append(install)
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=True, width=1000)


def _yaml_string(value: str) -> str:
    """``value`` for a YAML position where Terraform fills a reference in after yaml.safe_dump has
    quoted the text around it: as ``jsonencode(...)``, a JSON string, which YAML reads as a
    double-quoted scalar whatever it holds. Filled in raw, an SSH key comment such as ``ops: laptop``
    would make the list item a mapping (a plain scalar ends at ": "), and cloud-init would install
    no key. Literal text is left to yaml.safe_dump, which quotes it itself."""
    if not validate.is_reference(value):
        return value
    if Token.is_unresolved(value):
        return str(Fn.jsonencode(value))
    return f"${{jsonencode({_expression(value)})}}"


def _expression(reference: str) -> str:
    """The Terraform expression inside a ``${...}`` reference."""
    if not (reference.startswith("${") and reference.endswith("}")):
        raise ValueError(f"not a ${{...}} reference: {reference}")
    return reference[2:-1]


def kube_vip_manifests(address: str) -> list[dict[str, Any]]:
    """kube-vip as a DaemonSet on the control planes, announcing ``address`` by ARP."""
    labels = {"app.kubernetes.io/name": "kube-vip"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "kube-vip", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kube-vip"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "services/status", "nodes", "endpoints"],
                    "verbs": ["list", "get", "watch", "update"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["list", "get", "watch", "update", "create"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kube-vip"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-vip"},
            "subjects": [{"kind": "ServiceAccount", "name": "kube-vip", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kube-vip", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "kube-vip",
                        "hostNetwork": True,
                        "nodeSelector": {"node-role.kubernetes.io/control-plane": "true"},
                        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [
                            {
                                "name": "kube-vip",
                                "image": versions.KUBE_VIP_IMAGE.version,
                                "args": ["manager"],
                                "env": [
                                    {"name": "address", "value": address},
                                    {"name": "port", "value": "6443"},
                                    {"name": "vip_arp", "value": "true"},
                                    {"name": "cp_enable", "value": "true"},
                                    {"name": "vip_leaderelection", "value": "true"},
                                ],
                                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                            }
                        ],
                    },
                },
            },
        },
    ]
