#!/usr/bin/env bash
# Detect NVIDIA GPUs with lspci. Exits 3 with an explanation when none is found and one is required.
# Environment: REQUIRE_GPU (1 = a GPU must be present, 0 = report and carry on).
set -euo pipefail

# Every apt-get call waits for the dpkg lock (unattended-upgrades holds it for minutes after a boot;
# DPkg::Lock::Timeout, apt >= 1.9.11) and keeps locally changed conffiles without asking.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

require_gpu="${REQUIRE_GPU:-1}"
host="$(hostname)"

if ! command -v lspci >/dev/null 2>&1; then
  apt_get update -qq
  apt_get install -y -qq pciutils >/dev/null
fi

# By PCI vendor and class, never by the class's name: 10de is NVIDIA, 0300 a VGA compatible
# controller (GeForce and RTX workstation cards), 0302 a 3D controller (datacenter GPUs). The card's
# HDMI audio function (0403) and other vendors' VGA (a BMC, integrated graphics) are not GPUs here.
# Two assignments, so that a failing lspci stops the script (set -e) rather than reading as no GPU.
vga="$(lspci -n -d 10de::0300)"
compute="$(lspci -n -d 10de::0302)"
gpus="$(printf '%s\n%s\n' "$vga" "$compute" | grep -v '^$' || true)"
count=0
if [ -n "$gpus" ]; then
  count="$(printf '%s\n' "$gpus" | wc -l)"
fi

if [ "$count" -eq 0 ]; then
  if [ "$require_gpu" = "1" ]; then
    echo "ERROR: no NVIDIA GPU found on ${host} (lspci -n -d 10de::0300 and 10de::0302 list nothing)." >&2
    echo "Check that the card is seated and, in a VM, passed through; or set gpu_enabled=False" >&2
    echo "in the stack settings to run this host without a GPU." >&2
    exit 3
  fi
  echo "gpu-detect: no NVIDIA GPU on ${host}; continuing without GPU support (gpu_enabled=False)."
  exit 0
fi

echo "gpu-detect: ${count} NVIDIA GPU(s) on ${host}:"
printf '%s\n' "$gpus"
