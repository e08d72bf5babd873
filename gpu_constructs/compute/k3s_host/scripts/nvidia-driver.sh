#!/usr/bin/env bash
# Install the NVIDIA server driver branch DRIVER_BRANCH from the Ubuntu archive, once.
# A second run with the same branch loaded does nothing. When the new kernel module cannot be
# loaded without a reboot, the host reboots and records the boot id it rebooted from in
# REBOOT_MARKER; wait-for-reboot.sh (run next, from the machine that runs Terraform) waits until the
# boot id has changed, so no later step connects while the host is going down.
# With the argument "check" it changes nothing and says whether a run would: exit 0 when the branch
# is installed and loaded (a run holds the packages and does nothing else), 10 when it would install
# packages or reboot (node-drain.sh drains the node first then).
# Environment:
#   DRIVER_BRANCH         e.g. 580
#   DRIVER_KERNEL_MODULES open (NVIDIA's default since 560, Turing and newer) | proprietary (older GPUs)
#   REBOOT_MARKER         default /var/lib/gpu-constructs/reboot-from
set -euo pipefail

# Every apt-get call waits for the dpkg lock (unattended-upgrades holds it for minutes after a boot;
# DPkg::Lock::Timeout, apt >= 1.9.11) and keeps locally changed conffiles without asking.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

branch="${DRIVER_BRANCH:?DRIVER_BRANCH is required, for example 580}"
modules="${DRIVER_KERNEL_MODULES:-open}"
marker="${REBOOT_MARKER:-/var/lib/gpu-constructs/reboot-from}"

case "$modules" in
  # Ubuntu packages the open kernel modules as nvidia-driver-<branch>-server-open.
  open) package="nvidia-driver-${branch}-server-open" ;;
  proprietary) package="nvidia-driver-${branch}-server" ;;
  *) echo "ERROR: DRIVER_KERNEL_MODULES is '${modules}': use open or proprietary" >&2; exit 2 ;;
esac

loaded_branch() {
  # nvidia-smi prints e.g. "580.95.05"; the branch is the part before the first dot.
  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | cut -d. -f1
}
package_installed() {
  installed "$package"
}

# The driver packages stay on hold so unattended-upgrades cannot replace the driver under the loaded
# kernel module; only this script changes them, and it releases the old hold first (apt refuses to
# remove or replace a held package). Holding an already held package changes nothing.
# A hold is written through dpkg's selections, under the dpkg lock: wait for it as apt-get does.
apt_mark() {
  apt-mark -o DPkg::Lock::Timeout=600 "$@"
}
installed() {
  grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)"
}
hold_driver() {
  apt_mark hold "$package" "nvidia-utils-${branch}-server" >/dev/null
  hold_kernel
}
# A DKMS-built module (nvidia-dkms-*, what the driver package pulls in without Ubuntu's prebuilt
# linux-modules-nvidia-*) is compiled for each kernel as it is installed; a kernel that
# unattended-upgrades brings in, and that the module fails to build for, boots without a driver. So
# the running kernel and the metapackages that would pull in a new one stay held too, as the driver.
hold_kernel() {
  local dkms="nvidia-dkms-${branch}-server" kernel=() candidate
  [ "$modules" = open ] && dkms="${dkms}-open"
  installed "$dkms" || return 0
  for candidate in "linux-image-$(uname -r)" "linux-headers-$(uname -r)" "linux-modules-$(uname -r)" \
    linux-generic linux-image-generic linux-headers-generic \
    linux-generic-hwe-22.04 linux-image-generic-hwe-22.04 linux-headers-generic-hwe-22.04 \
    linux-generic-hwe-24.04 linux-image-generic-hwe-24.04 linux-headers-generic-hwe-24.04; do
    if installed "$candidate"; then kernel+=("$candidate"); fi
  done
  if [ "${#kernel[@]}" -gt 0 ]; then
    apt_mark hold "${kernel[@]}" >/dev/null
  fi
}
unhold_driver() {
  local held
  held="$(apt-mark showhold | grep -E '^(nvidia-driver|nvidia-utils)-[0-9]+-server' || true)"
  if [ -n "$held" ]; then
    # shellcheck disable=SC2086 # one package name per word
    apt_mark unhold $held >/dev/null
  fi
}

current="$(loaded_branch || true)"
if [ "${1:-}" = check ]; then
  if [ "$current" = "$branch" ] && package_installed; then
    echo "nvidia-driver: ${package} installed and loaded; a run changes nothing."
    exit 0
  fi
  echo "nvidia-driver: a run would change the driver (${package}; loaded now: ${current:-none})."
  exit 10
fi
if [ "$current" = "$branch" ] && package_installed; then
  hold_driver
  echo "nvidia-driver: ${package} already installed and loaded; nothing to do."
  exit 0
fi

if package_installed; then
  echo "nvidia-driver: ${package} is installed but not loaded."
else
  echo "nvidia-driver: installing ${package} (loaded now: ${current:-none})."
  unhold_driver
  apt_get update -qq
  # Switching between the open and the proprietary modules replaces one package with the other.
  apt_get install -y -qq \
    "linux-headers-$(uname -r)" \
    "$package" \
    "nvidia-utils-${branch}-server"
fi
hold_driver

if [ "$current" != "$branch" ] && modprobe nvidia 2>/dev/null && [ "$(loaded_branch || true)" = "$branch" ]; then
  echo "nvidia-driver: branch ${branch} loaded."
  exit 0
fi

echo "nvidia-driver: the new driver needs a reboot; rebooting $(hostname) now."
mkdir -p "$(dirname "$marker")"
cat /proc/sys/kernel/random/boot_id >"$marker"
# Detach so this SSH session can end cleanly before the host goes down.
nohup sh -c 'sleep 3; systemctl reboot' >/dev/null 2>&1 &
