#!/usr/bin/env bash
# What the helm provider needs to reach the k3s API, read from the server over SSH on every run, so a
# plan works from any machine holding the SSH key and never depends on a kubeconfig file a previous
# apply left behind (nor on the 365-day client certificate copied into one: k3s renews the admin
# certificate on the server and rewrites /etc/rancher/k3s/k3s.yaml when it starts; one that is about
# to expire because k3s has not restarted for months is refused, with the remedy).
# Runs on the machine that runs Terraform, in one of two modes (the first argument):
#   ca          the external data source's program (read at every plan): prints
#               {"ca_base64": "<the cluster CA, base64>"}; the query on stdin is read and ignored.
#   credential  the provider's exec credential plugin: prints an ExecCredential
#               (client.authentication.k8s.io/v1) with the admin client certificate and key, which
#               go to the provider's memory only: never into a file, the state or a log.
# Environment: SSH_USER, SSH_HOST, SSH_KEY, HOST_KEY (optional: the key the stack pins, '<type>
# <base64>'; ssh then accepts that key only; without it nothing is checked nor recorded), KUBECONFIG_PATH (default /etc/rancher/k3s/k3s.yaml),
# CREDENTIAL_RETRY_SECONDS and CREDENTIAL_BACKOFF_SECONDS (credential mode: see the retry below).
set -euo pipefail

mode="${1:?the mode is required: ca or credential}"
user="${SSH_USER:?SSH_USER is required}"
host="${SSH_HOST:?SSH_HOST is required}"
key="${SSH_KEY:?SSH_KEY is required}"
remote_path="${KUBECONFIG_PATH:-/etc/rancher/k3s/k3s.yaml}"

case "$mode" in
  ca) cat >/dev/null ;;
  credential) ;;
  *) echo "ERROR: kube-access: mode '${mode}': use ca or credential" >&2; exit 2 ;;
esac

# -n: never read stdin (client-go may hand the exec plugin a terminal).
ssh_options=(-n -i "$key" -o BatchMode=yes -o ConnectTimeout=10)
known_hosts=""
if [ -n "${HOST_KEY:-}" ]; then
  known_hosts="$(mktemp)"
  printf '%s %s\n' "$host" "$HOST_KEY" >"$known_hosts"
  ssh_options+=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known_hosts")
else
  # verify_ssh_host_keys=False: no check and no record, as Terraform's own SSH steps without a
  # host_key (a lab host rebuilt at its address must not fail on a key ~/.ssh/known_hosts kept).
  ssh_options+=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null)
fi
errors="$(mktemp)"
trap 'rm -f "$errors" ${known_hosts:+"$known_hosts"}' EXIT

# read_kubeconfig: k3s.yaml as the server holds it, into $kubeconfig; the ssh status otherwise.
read_kubeconfig() {
  # Without k3s.yaml the host also says whether a step of the stack runs on it right now (a script
  # or an upload under ~/.gpu-constructs): "[.]" keeps pgrep from matching this command itself.
  # shellcheck disable=SC2029 # the remote path is composed here on purpose
  kubeconfig="$(ssh "${ssh_options[@]}" "${user}@${host}" "sudo cat '${remote_path}' || { sudo pgrep -f '[.]gpu-constructs' >/dev/null && echo 'kube-access: a step of the stack runs' >&2; exit 1; }" 2>"$errors")"
}
read_failed() {
  echo "ERROR: kube-access: could not read ${remote_path} on ${host} over SSH as ${user}:" >&2
  tail -n 3 "$errors" >&2
  if [ -n "${HOST_KEY:-}" ] &&
    grep -q -e 'Host key verification failed' -e 'REMOTE HOST IDENTIFICATION HAS CHANGED' "$errors"; then
    echo "${host}'s SSH host key is not the one in the ssh_host_keys variable; if the host was" \
      "reinstalled, put its new keys there (ssh-keyscan ${host})." >&2
  else
    echo "Check that ${host} is up, that this machine is in admin_cidrs and that k3s is installed" \
      "(a first apply installs it before anything reads the API)." >&2
  fi
  exit 1
}

# A first apply reads the CA (its query, the cluster's id, is known only once the cluster step is
# made) while the server's driver and k3s steps still run: the host answers but has no k3s.yaml yet
# (sudo cat fails: ssh exits with the remote status, 255 being ssh's own failures), and may be
# rebooting for its driver. Only then, in ca mode, wait for k3s to write it, up to
# CA_WAIT_SECONDS; a host that does not answer at the first try fails the plan at once.
status=0
read_kubeconfig || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 255 ] && [ "$mode" = ca ]; then
  deadline=$((SECONDS + ${CA_WAIT_SECONDS:-0}))
  echo "kube-access: ${remote_path} is not on ${host} yet (k3s is being installed): waiting" \
    "up to ${CA_WAIT_SECONDS:-0}s" >&2
  # Waiting is only worth it while the host is being set up: a step of the stack runs on it, or it
  # is rebooting for its driver (ssh's 255). After CA_IDLE_SECONDS (default 300) with neither, no
  # step is coming (the driver step failed and Terraform goes on only with what does not depend on
  # it; or this is a plan, read at once from a state whose first apply stopped before k3s), so the
  # read fails then rather than hold the apply or the plan for the whole CA_WAIT_SECONDS.
  active=$SECONDS
  while [ "$status" -ne 0 ] && [ "$SECONDS" -lt "$deadline" ]; do
    if grep -q -e 'Host key verification failed' -e 'REMOTE HOST IDENTIFICATION HAS CHANGED' "$errors"; then
      break
    fi
    if [ "$status" -eq 255 ] || grep -q 'a step of the stack runs' "$errors"; then
      active=$SECONDS
    elif [ $((SECONDS - active)) -ge "${CA_IDLE_SECONDS:-300}" ]; then
      echo "kube-access: nothing sets ${host} up (no step of the stack runs there) and k3s is not" \
        "installed: an earlier step failed, or the first apply stopped before k3s. Install it with" \
        "terraform apply -target=<the server's k3s step> (the terraform_data whose address ends in" \
        "server-k3s_<hash> in cdk.tf.json), then apply again." >&2
      break
    fi
    sleep "${CA_POLL_SECONDS:-10}"
    status=0
    read_kubeconfig || status=$?
  done
fi
# The credential plugin runs when the provider calls the API, which may be while k3s restarts or
# the host reboots (an upgrade step, a driver change): ssh's own failures (255: refused, timed
# out, reset) are retried with a doubling back-off (CREDENTIAL_BACKOFF_SECONDS, capped at 30 s)
# for up to CREDENTIAL_RETRY_SECONDS (default 300); a remote failure (k3s.yaml unreadable) or a
# changed host key is no passing outage and fails at once. Progress goes to stderr only: client-go
# reads stdout as the ExecCredential.
if [ "$status" -eq 255 ] && [ "$mode" = credential ]; then
  deadline=$((SECONDS + ${CREDENTIAL_RETRY_SECONDS:-300}))
  delay="${CREDENTIAL_BACKOFF_SECONDS:-2}"
  while [ "$status" -eq 255 ] && [ "$SECONDS" -lt "$deadline" ]; do
    if grep -q -e 'Host key verification failed' -e 'REMOTE HOST IDENTIFICATION HAS CHANGED' "$errors"; then
      break
    fi
    echo "kube-access: ${host} does not answer over SSH ($(tail -n 1 "$errors")): retrying in ${delay}s" >&2
    sleep "$delay"
    delay=$(awk -v d="$delay" 'BEGIN { d = d * 2; if (d > 30) d = 30; print d }')
    status=0
    read_kubeconfig || status=$?
  done
fi
[ "$status" -eq 0 ] || read_failed

# field NAME: the value of the first "NAME: <base64>" line of the kubeconfig (k3s writes one cluster
# and one user).
field() {
  local value
  # A pipe, never a here-string: bash before 5.1 writes here-strings to a file in $TMPDIR.
  value="$(printf '%s\n' "$kubeconfig" | sed -n "s/^ *$1: *\([A-Za-z0-9+\/=]*\) *$/\1/p" | head -n 1)"
  if [ -z "$value" ]; then
    echo "ERROR: kube-access: ${remote_path} on ${host} has no $1 (is it k3s' admin kubeconfig?)" >&2
    exit 1
  fi
  printf '%s' "$value"
}
# json_pem BASE64: the PEM it encodes as a JSON string body (PEM holds no quotes nor backslashes).
json_pem() {
  printf '%s' "$1" | base64 -d | awk '{ printf "%s\\n", $0 }'
}

# k3s renews its certificates only when it starts, if they are within 90 days of expiring
# (docs.k3s.io/cli/certificate); a server that runs for a year without a restart hands out an
# expired admin certificate, and a helm v3.1.1 refresh that gets 401 drops each release from the
# state (helm/resource_helm_release.go Read, terraform-provider-helm#1669). So both modes refuse a
# certificate that expires within CERT_MIN_DAYS (default 7): the data source, read before the
# provider refreshes anything, fails the plan with the remedy instead.
if [ "$mode" = ca ]; then
  # Assigned, not an argument: a command substitution's failure is lost in printf's arguments.
  ca_base64="$(field certificate-authority-data)"
fi
certificate="$(field client-certificate-data)"
min_seconds=$(( ${CERT_MIN_DAYS:-7} * 86400 ))
if ! command -v openssl >/dev/null; then
  echo "ERROR: kube-access: openssl is required to check the k3s admin certificate's expiry" >&2
  exit 1
fi
if ! printf '%s' "$certificate" | base64 -d | openssl x509 -noout -checkend "$min_seconds" >/dev/null; then
  not_after="$(printf '%s' "$certificate" | base64 -d | openssl x509 -noout -enddate 2>/dev/null || true)"
  echo "ERROR: kube-access: the k3s admin client certificate in ${remote_path} on ${host}" \
    "expires within ${CERT_MIN_DAYS:-7} days or has expired (${not_after:-unreadable})." >&2
  echo "Renew it on the server: 'sudo systemctl restart k3s' (k3s renews certificates that expire" \
    "within 90 days when it starts), or 'sudo k3s certificate rotate' then the restart." >&2
  exit 1
fi

case "$mode" in
  ca)
    printf '{"ca_base64": "%s"}\n' "$ca_base64"
    ;;
  credential)
    client_key="$(field client-key-data)"
    certificate_pem="$(json_pem "$certificate")"
    key_pem="$(json_pem "$client_key")"
    printf '{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": '
    printf '{"clientCertificateData": "%s", "clientKeyData": "%s"}}\n' "$certificate_pem" "$key_pem"
    ;;
esac
