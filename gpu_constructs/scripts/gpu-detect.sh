#!/usr/bin/env bash
# Detect NVIDIA GPUs with lspci. Exits 3 with an explanation when none is found and one is required.
# Environment: REQUIRE_GPU (1 = a GPU must be present, 0 = report and carry on).
set -euo pipefail

require_gpu="${REQUIRE_GPU:-1}"
host="$(hostname)"

if ! command -v lspci >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq pciutils >/dev/null
fi

# Vendor 10de is NVIDIA; class 03xx is a display or 3D controller (the GPU itself, not its audio).
gpus="$(lspci -nn -d 10de: | grep -Ei '(VGA|3D|Display) controller' || true)"
count=0
if [ -n "$gpus" ]; then
  count="$(printf '%s\n' "$gpus" | wc -l)"
fi

if [ "$count" -eq 0 ]; then
  if [ "$require_gpu" = "1" ]; then
    echo "ERROR: no NVIDIA GPU found on ${host} (lspci -d 10de: lists no display or 3D controller)." >&2
    echo "Check that the card is seated and, in a VM, passed through; or set gpu_enabled=False" >&2
    echo "in the stack settings to run this host without a GPU." >&2
    exit 3
  fi
  echo "gpu-detect: no NVIDIA GPU on ${host}; continuing without GPU support (gpu_enabled=False)."
  exit 0
fi

echo "gpu-detect: ${count} NVIDIA GPU(s) on ${host}:"
printf '%s\n' "$gpus"
