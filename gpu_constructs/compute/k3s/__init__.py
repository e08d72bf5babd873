"""What the two k3s platforms share: the k3s host (:mod:`gpu_constructs.compute.k3s_host`) and the
Proxmox VMs (:mod:`gpu_constructs.compute.proxmox`) install k3s with the same scripts (``scripts/``:
install, kubeconfig, drain and node removal) and snapshot its embedded etcd the same way
(:mod:`gpu_constructs.compute.k3s.etcd`)."""
