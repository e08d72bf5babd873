#!/usr/bin/env bash
# Check that every storage tier's directory is there before anything provisions volumes into it, so
# a disk that is not mounted fails the apply instead of filling the root disk.
# Environment:
#   TIERS        space-separated name=path of every tier
#   OWN_DEVICE   space-separated names of the tiers that must be on another filesystem than /
#                (a backup on the root disk is lost with it)
set -euo pipefail

tiers="${TIERS:?TIERS is required}"
own_device=" ${OWN_DEVICE:-} "
root_device="$(stat -c %d /)"
failed=0

for tier in $tiers; do
  name="${tier%%=*}"
  path="${tier#*=}"
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
  echo "storage-check: ${name} at ${path}: ok."
done
exit "$failed"
