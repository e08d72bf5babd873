#!/usr/bin/env bash
# Install the NVIDIA Container Toolkit TOOLKIT_VERSION from NVIDIA's apt repository, once.
# k3s finds nvidia-container-runtime when it starts and adds the "nvidia" containerd runtime, so a
# running k3s is restarted after an install.
set -euo pipefail

# Every apt-get call waits for the dpkg lock (unattended-upgrades holds it for minutes after a boot;
# DPkg::Lock::Timeout, apt >= 1.9.11) and keeps locally changed conffiles without asking.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

version="${TOOLKIT_VERSION:?TOOLKIT_VERSION is required, for example 1.20.0}"
keyring="${KEYRING:-/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg}"
sources="${APT_SOURCES:-/etc/apt/sources.list.d/nvidia-container-toolkit.list}"

installed="$(nvidia-ctk --version 2>/dev/null | sed -n 's/^NVIDIA Container Toolkit CLI version \([0-9.]*\).*/\1/p' || true)"
if [ "$installed" = "$version" ]; then
  echo "nvidia-toolkit: ${version} already installed; nothing to do."
  exit 0
fi

echo "nvidia-toolkit: installing ${version} (installed now: ${installed:-none})."
if [ ! -f "$keyring" ]; then
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "$keyring"
fi
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
  | sed "s#deb https://#deb [signed-by=${keyring}] https://#g" >"$sources"
apt_get update -qq
apt_get install -y -qq --allow-downgrades \
  "nvidia-container-toolkit=${version}-1" \
  "nvidia-container-toolkit-base=${version}-1" \
  "libnvidia-container-tools=${version}-1" \
  "libnvidia-container1=${version}-1"

for unit in k3s k3s-agent; do
  if systemctl is-active --quiet "$unit"; then
    echo "nvidia-toolkit: restarting ${unit} so containerd picks up the nvidia runtime."
    systemctl restart "$unit"
  fi
done
