#!/bin/sh
# Before the Vault server starts (an init container of its pod, on its data volume): a volume that
# still holds file storage (Vault's 'storage "file"', with core/ at the top) is copied into integrated
# (raft) storage once, with the server stopped, by 'vault operator migrate'.
#
# The file storage is first moved, not copied, into FILE_DIR inside the volume (a rename on one file
# system) and is left there untouched: if anything goes wrong, the earlier configuration finds its
# data by pointing 'storage "file"' at it. The copy is marked by MARKER while it runs; a pod that
# stops mid-copy starts it again from the intact file storage. A volume with raft storage (vault.db)
# or an empty one (a new Vault) is left as it is.
# The records are copied as they are, still encrypted by the root key: the seal and the keys that
# unseal it do not change.
# Environment: DATA_DIR (/vault/data), NODE_ID (vault-0), CLUSTER_ADDR (the server's raft address)
set -eu

data="${DATA_DIR:-/vault/data}"
node_id="${NODE_ID:-vault-0}"
cluster_addr="${CLUSTER_ADDR:?CLUSTER_ADDR is required}"
old="${data}/file-storage"
marker="${data}/.raft-migration"

if [ -e "$marker" ]; then
  echo "vault-raft-migrate: an earlier copy was interrupted; starting it again from ${old}."
  rm -rf "${data}/vault.db" "${data}/raft"
fi
if [ -e "${data}/vault.db" ]; then
  exit 0
fi
if [ ! -d "${data}/core" ] && [ ! -d "$old" ]; then
  exit 0
fi

echo "vault-raft-migrate: moving the file storage to ${old} and copying it into raft storage."
mkdir -p "$old"
for entry in "$data"/* "$data"/.[!.]*; do
  [ -e "$entry" ] || continue
  case "${entry##*/}" in
    lost+found | file-storage | .raft-migration) ;;
    *) mv "$entry" "$old/" ;;
  esac
done
config="$(mktemp)"
cat >"$config" <<EOF
storage_source "file" {
  path = "${old}"
}
storage_destination "raft" {
  path    = "${data}"
  node_id = "${node_id}"
}
cluster_addr = "${cluster_addr}"
EOF
touch "$marker"
vault operator migrate -config="$config"
rm -f "$marker" "$config"
echo "vault-raft-migrate: done; ${old} keeps the file storage until it is deleted by hand."
