"""The host scripts' decisions, exercised with stubbed system commands (no root, no network)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from gpu_constructs.hostexec import SCRIPTS_DIR

SHELLCHECK = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "shellcheck"


class Host:
    """A fake host: stub commands on PATH that log their calls and read canned state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir()
        self.state.mkdir()
        self.log = root / "calls.log"
        self.log.touch()
        for name in ("apt-get", "systemctl", "nohup", "ufw", "dpkg-query", "uname"):
            self.stub(name, "")
        # gpg reads the key from a pipe: the stub must read it too, or the writer dies of SIGPIPE.
        self.stub("gpg", "cat >/dev/null")
        self.stub("hostname", "echo gpu-host")

    def stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{self.log}"\n{body}\n')
        path.chmod(0o755)

    def calls(self, prefix: str = "") -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith(prefix)]

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "STATE": str(self.state),
            "HOME": str(self.root),
            **env,
        }
        return subprocess.run(
            ["bash", str(SCRIPTS_DIR / script)], env=full_env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_every_script_is_shellcheck_clean():
    scripts = sorted(SCRIPTS_DIR.glob("*.sh"))
    assert len(scripts) >= 7
    result = subprocess.run([str(SHELLCHECK), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- gpu-detect.sh ---------------------------------------------------------------------------------
A100 = "01:00.0 3D controller [0302]: NVIDIA Corporation GA100 [A100 PCIe 40GB] [10de:20f1] (rev a1)"
AUDIO = "01:00.1 Audio device [0403]: NVIDIA Corporation GA102 High Definition Audio [10de:1aef]"


def test_gpu_detect_counts_gpus_not_their_audio_functions(host: Host):
    host.stub("lspci", f'printf "%s\\n" "{A100}" "{AUDIO}"')
    result = host.run("gpu-detect.sh", REQUIRE_GPU="1")
    assert result.returncode == 0
    assert "1 NVIDIA GPU(s) on gpu-host" in result.stdout


def test_gpu_detect_fails_clearly_without_a_gpu(host: Host):
    host.stub("lspci", "true")
    result = host.run("gpu-detect.sh", REQUIRE_GPU="1")
    assert result.returncode == 3
    assert "no NVIDIA GPU found on gpu-host" in result.stderr
    assert "gpu_enabled=False" in result.stderr


def test_gpu_detect_carries_on_when_no_gpu_is_required(host: Host):
    host.stub("lspci", "true")
    result = host.run("gpu-detect.sh", REQUIRE_GPU="0")
    assert result.returncode == 0
    assert "continuing without GPU support" in result.stdout


# --- nvidia-driver.sh ------------------------------------------------------------------------------
def _driver_host(host: Host, loaded: str | None, modprobe_ok: bool) -> None:
    if loaded:
        (host.state / "driver").write_text(loaded)
    host.stub("nvidia-smi", '[ -f "$STATE/driver" ] && cat "$STATE/driver" || exit 9')
    load = 'echo 580.95.05 > "$STATE/driver"' if modprobe_ok else "exit 1"
    host.stub("modprobe", load)


def test_driver_already_loaded_is_left_alone(host: Host):
    _driver_host(host, "580.95.05", modprobe_ok=True)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580")
    assert result.returncode == 0, result.stderr
    assert "already installed and loaded" in result.stdout
    assert host.calls("apt-get") == []


def test_driver_install_then_load_without_reboot(host: Host):
    _driver_host(host, None, modprobe_ok=True)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580")
    assert result.returncode == 0, result.stderr
    installs = [c for c in host.calls("apt-get") if "install" in c]
    assert len(installs) == 1 and "nvidia-driver-580-server" in installs[0]
    assert "branch 580 loaded" in result.stdout
    assert host.calls("nohup") == []


def test_driver_upgrade_that_needs_a_reboot_reboots(host: Host):
    _driver_host(host, "545.29.06", modprobe_ok=False)
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580")
    assert result.returncode == 0, result.stderr
    assert "needs a reboot" in result.stdout
    # The reboot is detached into the background; give it a moment to be logged.
    for _ in range(50):
        if any("systemctl reboot" in c for c in host.calls("nohup")):
            break
        time.sleep(0.1)
    assert any("systemctl reboot" in c for c in host.calls("nohup"))


def test_driver_second_run_after_install_does_nothing(host: Host):
    _driver_host(host, None, modprobe_ok=True)
    assert host.run("nvidia-driver.sh", DRIVER_BRANCH="580").returncode == 0
    host.log.write_text("")
    result = host.run("nvidia-driver.sh", DRIVER_BRANCH="580")
    assert "nothing to do" in result.stdout
    assert host.calls("apt-get") == []


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
        'else echo "gpu-host   Ready    control-plane   1m   v1.35.5+k3s1"; fi',
    )
    # The installer: records what it was asked for, then "installs" that version.
    host.stub(
        "curl",
        "cat <<'INSTALLER'\n"
        'echo "installer $INSTALL_K3S_EXEC $INSTALL_K3S_VERSION url=$K3S_URL" >> "$CALLS"\n'
        'echo "k3s version $INSTALL_K3S_VERSION (abcdef)" > "$STATE/k3s"\n'
        "INSTALLER",
    )


def _k3s_env(host: Host, **overrides: str) -> dict[str, str]:
    env = {
        "K3S_ROLE": "server",
        "K3S_VERSION": "v1.35.5+k3s1",
        "K3S_TOKEN": "t" * 40,
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


# --- firewall.sh -----------------------------------------------------------------------------------
def test_firewall_opens_public_ports_and_cluster_ports_to_trusted_networks_only(host: Host):
    result = host.run(
        "firewall.sh",
        PUBLIC_PORTS="22/tcp 443/tcp",
        CLUSTER_PORTS="10250/tcp 8472/udp",
        TRUSTED_CIDRS="10.42.0.0/16",
    )
    assert result.returncode == 0, result.stderr
    calls = host.calls("ufw")
    assert calls[:3] == [
        "ufw default deny incoming",
        "ufw default allow outgoing",
        "ufw default allow routed",
    ]
    assert "ufw allow 22/tcp" in calls and "ufw allow 443/tcp" in calls
    assert "ufw allow proto udp from 10.42.0.0/16 to any port 8472" in calls
    assert "ufw allow 10250/tcp" not in calls
    assert calls[-2:] == ["ufw --force enable", "ufw status numbered"]


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
