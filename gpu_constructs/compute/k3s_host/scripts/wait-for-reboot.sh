#!/usr/bin/env bash
# Wait until a host that nvidia-driver.sh rebooted is back: its boot id differs from the one recorded
# in REBOOT_MARKER, SSH works again and the driver answers 'nvidia-smi -L' (the marker is removed only
# then, so a re-run checks again). Without a marker no reboot is pending and this returns at once.
# Runs on the machine that runs Terraform (local-exec), bounded by WAIT_SECONDS.
# Environment: SSH_USER, SSH_HOST, SSH_KEY, HOST_KEY (optional), WAIT_SECONDS (default 900), POLL_SECONDS (default 10),
#   REBOOT_MARKER (default /var/lib/gpu-constructs/reboot-from)
set -euo pipefail

user="${SSH_USER:?SSH_USER is required}"
host="${SSH_HOST:?SSH_HOST is required}"
key="${SSH_KEY:?SSH_KEY is required}"
wait_seconds="${WAIT_SECONDS:-900}"
poll_seconds="${POLL_SECONDS:-10}"
marker="${REBOOT_MARKER:-/var/lib/gpu-constructs/reboot-from}"

# With HOST_KEY (the host's public key, '<type> <base64>'), ssh accepts that key only; without it,
# nothing is checked nor recorded (verify_ssh_host_keys=False, as Terraform's own SSH steps).
ssh_opts=(-i "$key" -o BatchMode=yes -o ConnectTimeout=10)
if [ -n "${HOST_KEY:-}" ]; then
  known_hosts="$(mktemp)"
  trap 'rm -f "$known_hosts"' EXIT
  printf '%s %s\n' "$host" "$HOST_KEY" >"$known_hosts"
  ssh_opts+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known_hosts")
else
  ssh_opts+=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null)
fi

remote() {
  # shellcheck disable=SC2029 # the remote command is composed here, with local values, on purpose
  ssh "${ssh_opts[@]}" "${user}@${host}" "$@"
}

deadline=$((SECONDS + wait_seconds))
while :; do
  # One line: "<boot id rebooted from, or none> <current boot id>"; nothing while the host is down.
  if answer="$(remote "printf '%s %s\n' \"\$(sudo cat '${marker}' 2>/dev/null || echo none)\" \"\$(cat /proc/sys/kernel/random/boot_id)\"" 2>/dev/null)"; then
    read -r from now <<<"$answer"
    if [ "${from:-none}" = none ]; then
      echo "wait-for-reboot: no reboot pending on ${host}."
      exit 0
    fi
    if [ -n "${now:-}" ] && [ "$now" != "$from" ]; then
      # The reboot was for the driver: it must work now. nvidia-smi talks to the loaded module, so
      # it fails when the new kernel has no module for it (a DKMS build that failed, an unsigned
      # module under Secure Boot). Retried until the deadline: the module may still be loading.
      if smi="$(remote "nvidia-smi -L" 2>&1)"; then
        remote "sudo rm -f '${marker}'"
        echo "wait-for-reboot: ${host} is back (boot id ${now}); the NVIDIA driver answers:"
        printf '%s\n' "$smi"
        exit 0
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "ERROR: ${host} is back from the reboot (boot id ${now}), but the NVIDIA driver does not work:" >&2
        echo "'nvidia-smi -L' says: ${smi:-nothing}" >&2
        echo "Check 'dkms status', 'sudo modprobe nvidia' and 'mokutil --sb-state' on the host (with Secure" >&2
        echo "Boot on, the module's key must be enrolled), then re-run the apply." >&2
        exit 1
      fi
      sleep "$poll_seconds"
      continue
    fi
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ERROR: ${host} did not come back within ${wait_seconds}s of the reboot after the NVIDIA driver" >&2
    echo "install (its boot id is unchanged or SSH does not answer). Check the host's console: a kernel" >&2
    echo "that cannot load the module with Secure Boot on waits at the MOK enrollment screen." >&2
    exit 1
  fi
  sleep "$poll_seconds"
done
