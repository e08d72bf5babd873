#!/usr/bin/env bash
# Check that every storage tier's directory is there before anything provisions volumes into it, so
# a disk that is not mounted fails the apply instead of filling the root disk; and make the node's
# k3s start, at every boot, only once the tiers' filesystems are mounted.
#
# The check runs only at apply. After a reboot where a tier's disk does not come back, the
# local-path provisioner's volumes are hostPath volumes of type DirectoryOrCreate
# (rancher/local-path-provisioner v0.0.37 provisioner.go, createPersistentVolumeSource): the kubelet
# would create each volume's directory afresh on the root disk and start the pods on empty data. So
# every service in NODE_SERVICES gets a drop-in with RequiresMountsFor= of every tier's path: for the
# path and each of its parents, systemd orders the service after that mount unit and, for a unit
# from /etc/fstab or a .mount file, requires it (systemd src/core/unit.c,
# unit_add_mount_dependencies); a directory on the root filesystem needs only "-.mount", so listing
# every tier is harmless. A mount that fails at boot (an fstab entry with nofail whose device does
# not appear) then keeps the service from starting ("If one of the other units fails to activate,
# and an ordering dependency After= on the failing unit is set, this unit will not be started",
# systemd.unit(5), Requires=), and stopping the mount unit stops the service. A filesystem mounted
# by hand has no mount unit at boot: the script warns about it. The drop-in takes effect at the
# service's next start; a running k3s is not restarted.
# Environment:
#   TIERS          space-separated name=path of every tier
#   OWN_DEVICE     space-separated names of the tiers that must be on another filesystem than /
#                  (a backup on the root disk is lost with it)
#   NODE_SERVICES  space-separated systemd services that run the node (k3s k3s-agent); none: no drop-in
#   SYSTEMD_DIR    where the drop-ins go (default /etc/systemd/system)
set -euo pipefail

tiers="${TIERS:?TIERS is required}"
own_device=" ${OWN_DEVICE:-} "
systemd_dir="${SYSTEMD_DIR:-/etc/systemd/system}"
root_device="$(stat -c %d /)"
failed=0
paths=()

for tier in $tiers; do
  name="${tier%%=*}"
  path="${tier#*=}"
  paths+=("$path")
  if [ ! -d "$path" ]; then
    echo "ERROR: storage tier ${name}: ${path} does not exist on $(hostname); mount its disk there" \
      "(or create the directory, for a tier on the root disk)." >&2
    failed=1
    continue
  fi
  case "$own_device" in
    *" ${name} "*)
      if [ "$(stat -c %d "$path")" = "$root_device" ]; then
        echo "ERROR: storage tier ${name}: ${path} is on the root filesystem of $(hostname); mount" \
          "its own disk or NFS share there (findmnt ${path} shows nothing)." >&2
        failed=1
        continue
      fi
      ;;
  esac
  if [ -n "${NODE_SERVICES:-}" ]; then
    target="$(findmnt -n -o TARGET -T "$path" 2>/dev/null || true)"
    if [ -n "$target" ] && [ "$target" != / ]; then
      unit="$(systemd-escape -p --suffix=mount "$target")"
      if [ -z "$(systemctl show --property=FragmentPath --value "$unit" 2>/dev/null || true)" ]; then
        echo "WARNING: storage tier ${name}: ${target} is mounted, but not from /etc/fstab or a" \
          "mount unit: after a reboot nothing mounts it again and k3s starts without it." >&2
      fi
    fi
  fi
  echo "storage-check: ${name} at ${path}: ok."
done

if [ -n "${NODE_SERVICES:-}" ]; then
  dropin="# Written by gpu_constructs (the storage tiers); changes here are overwritten on the next apply.
[Unit]
RequiresMountsFor=${paths[*]}"
  changed=0
  for service in $NODE_SERVICES; do
    file="${systemd_dir}/${service}.service.d/gpu-constructs-storage.conf"
    if [ "$(cat "$file" 2>/dev/null || true)" != "$dropin" ]; then
      mkdir -p "$(dirname "$file")"
      printf '%s\n' "$dropin" >"$file"
      changed=1
    fi
  done
  if [ "$changed" = 1 ]; then
    # Loads the drop-ins; it restarts nothing.
    systemctl daemon-reload
    echo "storage-check: ${NODE_SERVICES// /, } start only with ${paths[*]} mounted."
  fi
fi
exit "$failed"
