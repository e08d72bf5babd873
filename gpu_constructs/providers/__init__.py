"""Hand-written cdktf bindings for providers without a prebuilt package (linode, proxmox)."""
