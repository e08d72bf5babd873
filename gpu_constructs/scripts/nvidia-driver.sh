#!/usr/bin/env bash
# Install the NVIDIA server driver branch DRIVER_BRANCH from the Ubuntu archive, once.
# A second run with the same branch loaded does nothing. When the new kernel module cannot be
# loaded without a reboot, the host reboots; the next step's SSH connection waits for it.
set -euo pipefail

branch="${DRIVER_BRANCH:?DRIVER_BRANCH is required, for example 580}"

loaded_branch() {
  # nvidia-smi prints e.g. "580.95.05"; the branch is the part before the first dot.
  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | cut -d. -f1
}

current="$(loaded_branch || true)"
if [ "$current" = "$branch" ]; then
  echo "nvidia-driver: branch ${branch} already installed and loaded; nothing to do."
  exit 0
fi

if grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "nvidia-driver-${branch}-server" 2>/dev/null)"; then
  echo "nvidia-driver: nvidia-driver-${branch}-server is installed but not loaded."
else
  echo "nvidia-driver: installing nvidia-driver-${branch}-server (loaded now: ${current:-none})."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "linux-headers-$(uname -r)" \
    "nvidia-driver-${branch}-server" \
    "nvidia-utils-${branch}-server"
fi

if modprobe nvidia 2>/dev/null && [ "$(loaded_branch || true)" = "$branch" ]; then
  echo "nvidia-driver: branch ${branch} loaded."
  exit 0
fi

echo "nvidia-driver: the new driver needs a reboot; rebooting $(hostname) now."
# Detach so this SSH session can end cleanly before the host goes down.
nohup sh -c 'sleep 3; systemctl reboot' >/dev/null 2>&1 &
