"""A fake host for the host scripts: stub commands on PATH that log their calls, and a client
certificate as k3s issues it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpu_constructs.hostexec import script_path


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
        for name in ("apt-get", "apt-mark", "systemctl", "nohup", "ufw", "dpkg-query", "uname"):
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

    def environment(self, **env: str) -> dict[str, str]:
        """The stubs first on PATH, their state directory, a private HOME, and ``env``."""
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "STATE": str(self.state), "HOME": str(self.root), **env}

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script_path(script))],
            env=self.environment(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def run_step(self, step: dict, values: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
        """A synthesized one-script step (hostexec.run_scripts) as it runs on the host: its
        script with the environment its triggers record and its uploaded secrets file, each
        ``${var.NAME}`` in it replaced by ``values[NAME]``. Returns the run and the file's path."""
        (upload,) = [
            p["file"]
            for p in step["provisioner"]
            if p.get("file", {}).get("destination", "").endswith(".env")
        ]
        content = upload["content"]
        for name, value in values.items():
            content = content.replace(f"${{var.{name}}}", value)
        assert "${" not in content, content
        secrets = self.state / Path(upload["destination"]).name
        secrets.write_text(content)
        scripts = {
            key.split(":", 1)[0] for key in step["triggers_replace"] if key.endswith(".sh") or ".sh:" in key
        }
        (script,) = scripts
        env = {
            key.split(":", 1)[1]: value
            for key, value in step["triggers_replace"].items()
            if key.startswith(f"{script}:")
        }
        return self.run(script, SECRETS_FILE=str(secrets), **env), secrets


def _certificate(days: float, name: str = "system:admin") -> str:
    """A client certificate as k3s issues it (EC P-256), valid from now for ``days``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
