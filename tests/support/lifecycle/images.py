"""Build the project's Dockerfiles with real BuildKit, offline, on stand-in base images.

``Dockerd`` starts Debian's ``dockerd`` (package docker.io) privately: vfs storage, no bridge, no
iptables, its own data root, exec root, pid file and unix socket under a temporary directory, no TCP.
Builds run with ``DOCKER_BUILDKIT=1`` (dockerd's built-in BuildKit) and ``--network=none``, so a
``FROM`` resolves from the daemon's own image store and nothing is pulled.

The stand-in bases are ``FROM scratch`` images with the layout of the real ones, tagged with the real
names the Dockerfiles use:

- ``nvcr.io/nvidia/cuda:<tag>-ubuntu24.04``: Ubuntu 24.04 merges /usr, so ``/bin``, ``/sbin``,
  ``/lib`` and ``/lib64`` are symlinks into ``usr/`` and ``/var/run`` is a symlink to ``/run``. This
  is what makes copying a whole foreign root onto it fail ("cannot copy to non-directory"). A static
  busybox gives it a shell. NVIDIA's apt repository cannot be reached here, so the base carries stub
  ``apt-get``, ``curl`` and ``gpg`` that check the repository is set up as the install step sets it
  up (the signed-by keyring, the list file), that the four toolkit packages are asked for at one
  ``<version>-1``, and then lay down the files the real packages install. This proves the Dockerfile
  steps run in order and the layout after them; it cannot prove the real repository serves those
  versions or what the real packages contain beyond these paths.
- ``rancher/k3s:<tag>``: the tree k3s's ``package/Dockerfile`` builds (k3s-io/k3s, ``FROM scratch``,
  ``COPY --from=base /image /``): ``/bin`` from the data archive (``scripts/package-cli`` tars
  ``./bin ./etc``; k3s with its multicall links, the ``cni`` binary with its plugin links, ``aux/``
  with iptables and friends), ``/etc`` (passwd, group, nsswitch.conf, os-release, the CA bundle),
  the empty ``/run``, ``/var/run``, ``/tmp`` (1777), ``/lib/modules``, ``/lib/firmware`` and
  ``/usr/share/zoneinfo``. Here /lib and /var/run are directories, on Ubuntu symlinks.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DOCKERD = "/usr/sbin/dockerd"  # Debian docker.io
DOCKER = "/usr/bin/docker"  # the CLI of the same package (/usr/local/bin/docker may be another one)
BUSYBOX = "/bin/busybox"  # Debian busybox-static

# The toolkit packages and the paths the node image relies on from each: NVIDIA/nvidia-container-toolkit
# packaging/debian/nvidia-container-toolkit-base.install (runtime, nvidia-ctk, nvidia-cdi-hook; its
# postinst writes config.toml with `nvidia-ctk config`), nvidia-container-toolkit.install (the hook);
# libnvidia-container's tools (nvidia-container-cli) and library (pkg/deb/prepare in that repository).
TOOLKIT_FILES = {
    "nvidia-container-toolkit-base": [
        "usr/bin/nvidia-container-runtime",
        "usr/bin/nvidia-ctk",
        "usr/bin/nvidia-cdi-hook",
        "etc/nvidia-container-runtime/config.toml",
    ],
    "nvidia-container-toolkit": ["usr/bin/nvidia-container-runtime-hook"],
    "libnvidia-container-tools": ["usr/bin/nvidia-container-cli"],
    "libnvidia-container1": ["usr/lib/x86_64-linux-gnu/libnvidia-container.so.1"],
}


class DockerUnavailable(RuntimeError):
    """dockerd or BuildKit cannot run here; the message says why."""


@dataclass
class BuildResult:
    returncode: int
    output: str


class Dockerd:
    """A private dockerd; ``stop()`` ends it by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, root: Path, timeout: float = 60.0) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.log_path = root / "dockerd.log"
        self.pidfile = root / "docker.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.timeout = timeout

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "DOCKER_HOST": f"unix://{self.sock}",
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.root / "cli"),
        }

    def start(self) -> None:
        for tool in (DOCKERD, DOCKER):
            if not Path(tool).exists():
                raise DockerUnavailable(f"{tool} is missing: apt-get install docker.io (make deps)")
        args = [
            DOCKERD,
            "--storage-driver=vfs",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.pidfile}",
            "-H",
            f"unix://{self.sock}",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"dockerd exited with {self.proc.returncode}:\n{self.log()}")
            if self.docker("info", check=False).returncode == 0:
                return
            time.sleep(0.5)
        self.stop()
        raise DockerUnavailable(
            f"dockerd did not answer `docker info` in {self.timeout:.0f} s:\n{self.log()}"
        )

    def log(self, tail: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKER, *args], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def build(self, context: Path, tag: str, dockerfile: Path | None = None) -> BuildResult:
        args = ["build", "--network=none", "--progress=plain", "-t", tag]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        result = self.docker(*args, str(context), check=False)
        return BuildResult(result.returncode, result.stdout + result.stderr)

    def export(self, image: str) -> tarfile.TarFile:
        """The image's filesystem, as ``docker create`` + ``docker export`` give it."""
        container = self.docker("create", image).stdout.strip()
        try:
            out = self.root / f"{container}.tar"
            self.docker("export", "-o", str(out), container)
        finally:
            self.docker("rm", container, check=False)
        return tarfile.open(out)


# --- stand-in bases --------------------------------------------------------------------------------
def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _link(root: Path, path: str, to: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(to)


def _busybox_applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout
    return out.split()


APT_GET_STUB = r"""#!/bin/sh
# stand-in apt-get: NVIDIA's repository is not reachable offline (see tests/support/lifecycle/images.py)
set -e
case "$1" in
update) exit 0 ;;
install) shift ;;
*) echo "apt-get stub: unsupported: $*" >&2; exit 100 ;;
esac
for pkg in "$@"; do
  case "$pkg" in
  -*) continue ;;
  ca-certificates|curl|gnupg) continue ;;
  esac
  name=${pkg%%=*}
  version=${pkg#*=}
  [ "$name" != "$pkg" ] || { echo "E: $name: not pinned to a version" >&2; exit 100; }
  list=/etc/apt/sources.list.d/nvidia-container-toolkit.list
  key=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  grep -q "^deb \[signed-by=$key\] https://nvidia.github.io/" "$list" 2>/dev/null \
    || { echo "E: Unable to locate package $name (no signed NVIDIA repository in $list)" >&2; exit 100; }
  [ -s "$key" ] || { echo "E: $key is missing: NO_PUBKEY" >&2; exit 100; }
  case "$version" in
  @TOOLKIT_VERSION@-1) ;;
  *) echo "E: Version '$version' for '$name' was not found" >&2; exit 100 ;;
  esac
  case "$name" in
@CASES@
  *) echo "E: Unable to locate package $name" >&2; exit 100 ;;
  esac
done
"""

CURL_STUB = r"""#!/bin/sh
# stand-in curl: what nvidia.github.io/libnvidia-container serves for these two URLs
for url; do :; done
case "$url" in
https://nvidia.github.io/libnvidia-container/gpgkey) echo "-----BEGIN PGP PUBLIC KEY BLOCK-----" ;;
https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list)
  echo 'deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /' ;;
*) echo "curl: (6) Could not resolve host: $url" >&2; exit 6 ;;
esac
"""

GPG_STUB = r"""#!/bin/sh
# stand-in gpg: --dearmor -o FILE writes its input to FILE
out=
while [ $# -gt 0 ]; do
  case "$1" in -o|--output) out=$2; shift ;; esac
  shift
done
[ -n "$out" ] && cat > "$out"
"""


def cuda_ubuntu_base(root: Path, toolkit_version: str) -> None:
    """nvcr.io/nvidia/cuda:*-base-ubuntu24.04: merged /usr, /var/run -> /run, stub apt tooling."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/share/keyrings", "etc/apt/sources.list.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in ("run", "var/lib/apt/lists", "root", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    for top in ("bin", "sbin", "lib", "lib64"):
        _link(root, top, f"usr/{top}")
    _link(root, "var/run", "/run")
    _write(root, "etc/os-release", 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\n')
    _write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    shutil.copy2(BUSYBOX, root / "usr/bin/busybox")
    stubs = {"apt-get", "curl", "gpg"}
    for applet in _busybox_applets():
        if applet not in stubs and not (root / "usr/bin" / applet).exists():
            _link(root, f"usr/bin/{applet}", "busybox")
    cases = "\n".join(
        f"  {name}) "
        + " ".join(
            f"mkdir -p /{PurePosixPath(f).parent} && echo stub > /{f} && chmod 755 /{f} &&" for f in files
        )
        + " :;;"
        for name, files in TOOLKIT_FILES.items()
    )
    apt = APT_GET_STUB.replace("@TOOLKIT_VERSION@", toolkit_version).replace("@CASES@", cases)
    _write(root, "usr/bin/apt-get", apt, 0o755)
    _write(root, "usr/bin/curl", CURL_STUB, 0o755)
    _write(root, "usr/bin/gpg", GPG_STUB, 0o755)


K3S_MULTICALL = [
    "containerd", "crictl", "kubectl", "k3s-agent", "k3s-server", "k3s-token", "k3s-etcd-snapshot",
    "k3s-secrets-encrypt", "k3s-certificate", "k3s-completion",
]  # fmt: skip
K3S_CNI = ["bandwidth", "bridge", "firewall", "flannel", "host-local", "loopback", "portmap"]
K3S_AUX = ["iptables", "ip6tables", "iptables-save", "ip6tables-save", "xtables-legacy-multi", "ipset"]


def k3s_tree(root: Path) -> None:
    """rancher/k3s: k3s-io/k3s package/Dockerfile + scripts/package-cli (see the module docstring)."""
    for name in ("k3s", "cni", "containerd-shim-runc-v2", "runc", "check-config"):
        _write(root, f"bin/{name}", "stub\n", 0o755)
    for name in K3S_MULTICALL:
        _link(root, f"bin/{name}", "k3s")
    for name in K3S_CNI:
        _link(root, f"bin/{name}", "cni")
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    _link(root, "bin/sh", "busybox")
    for name in K3S_AUX:
        _write(root, f"bin/aux/{name}", "stub\n", 0o755)
    _write(root, "etc/passwd", "root:x:0:0:root:/:/bin/sh\n")
    _write(root, "etc/group", "root:x:0:\n")
    _write(root, "etc/nsswitch.conf", "hosts: files dns\n")
    _write(root, "etc/os-release", 'PRETTY_NAME="K3s stand-in"\n')
    _write(root, "etc/ssl/certs/ca-certificates.crt", "stub\n")
    _write(root, "usr/share/zoneinfo/UTC", "stub\n")
    for d in ("run", "var/run", "lib/modules", "lib/firmware"):
        (root / d).mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)


PIP_STUB = r"""#!/bin/sh
# stand-in python3: PyPI is not reachable offline (see tests/support/lifecycle/images.py). `python3 -m pip
# install` of a pinned jupyterhub lays down what its wheel installs on PATH (jupyterhub's
# pyproject.toml [project.scripts]: jupyterhub, jupyterhub-singleuser) and its dist-info.
set -e
[ "$1 $2 $3" = "-m pip install" ] || { echo "python3 stub: unsupported: $*" >&2; exit 2; }
shift 3
for req in "$@"; do
  case "$req" in
  -*) continue ;;
  jupyterhub==*) ;;
  *) echo "ERROR: No matching distribution found for $req (offline stand-in knows jupyterhub only)" >&2; exit 1 ;;
  esac
  version=${req#jupyterhub==}
  case "$version" in
  ""|*"*"*) echo "ERROR: jupyterhub is not pinned to one version: $req" >&2; exit 1 ;;
  esac
  mkdir -p /usr/local/lib/python3.12/dist-packages/jupyterhub-$version.dist-info /usr/local/bin
  echo "Name: jupyterhub" > /usr/local/lib/python3.12/dist-packages/jupyterhub-$version.dist-info/METADATA
  for script in jupyterhub jupyterhub-singleuser; do
    printf '#!/usr/bin/python3\n' > /usr/local/bin/$script
    chmod 755 /usr/local/bin/$script
  done
done
"""

GETENT_STUB = r"""#!/bin/sh
# stand-in getent (libc-bin): passwd lookups by name or uid
[ "$1" = passwd ] || exit 2
awk -F: -v k="$2" '$1 == k || $3 == k { print; found = 1 } END { exit !found }' /etc/passwd
"""

USERADD_STUB = r"""#!/bin/sh
# stand-in useradd (passwd): -m -u UID -g GID -s SHELL NAME
while [ $# -gt 1 ]; do
  case "$1" in -u) uid=$2; shift ;; -g) gid=$2; shift ;; -s) shell=$2; shift ;; esac
  shift
done
echo "$1:x:$uid:$gid::/home/$1:$shell" >> /etc/passwd
mkdir -p "/home/$1"
"""


def ngc_base(root: Path) -> None:
    """nvcr.io/nvidia/pytorch and tensorflow 25.01: Ubuntu 24.04 (merged /usr, /var/run -> /run,
    the image's own ``ubuntu`` user with uid 1000), Python 3.12 with pip installing scripts to
    /usr/local/bin, JupyterLab's ``jupyter`` but no JupyterHub. A stub python3 stands in for pip."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "run", "root", "home/ubuntu"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    for top in ("bin", "sbin", "lib", "lib64"):
        _link(root, top, f"usr/{top}")
    _link(root, "var/run", "/run")
    _write(root, "etc/os-release", 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\n')
    _write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n",
    )
    _write(root, "etc/group", "root:x:0:\nusers:x:100:\nubuntu:x:1000:\n")
    _write(root, "usr/local/bin/jupyter", "#!/usr/bin/python3\n", 0o755)
    shutil.copy2(BUSYBOX, root / "usr/bin/busybox")
    stubs = {"python3", "getent", "useradd"}
    for applet in _busybox_applets():
        if applet not in stubs and not (root / "usr/bin" / applet).exists():
            _link(root, f"usr/bin/{applet}", "busybox")
    _write(root, "usr/bin/python3", PIP_STUB, 0o755)
    _write(root, "usr/bin/getent", GETENT_STUB, 0o755)
    _write(root, "usr/sbin/useradd", USERADD_STUB, 0o755)


@dataclass(frozen=True)
class StandIn:
    """How to lay down a stand-in for one image repository."""

    populate: Callable[[Path, dict[str, str]], None]


# image repository (what FROM names, without the tag) -> its stand-in
STAND_INS: dict[str, StandIn] = {
    "nvcr.io/nvidia/cuda": StandIn(lambda root, args: cuda_ubuntu_base(root, args["NVIDIA_CTK_VERSION"])),
    "rancher/k3s": StandIn(lambda root, args: k3s_tree(root)),
    "nvcr.io/nvidia/pytorch": StandIn(lambda root, args: ngc_base(root)),
    "nvcr.io/nvidia/tensorflow": StandIn(lambda root, args: ngc_base(root)),
}


def from_images(dockerfile: Path) -> tuple[list[str], dict[str, str]]:
    """The external images a Dockerfile's FROM lines name (ARG defaults substituted), and the ARGs."""
    text = dockerfile.read_text().replace("\\\n", " ")
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].upper()
        if keyword == "ARG" and len(words) > 1 and "=" in words[1]:
            key, value = words[1].split("=", 1)
            args.setdefault(key, value.strip('"'))
        elif keyword == "FROM":
            rest = [w for w in words[1:] if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest[0])
            if image not in stages and image != "scratch":
                images.append(image)
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2])
    return images, args


def repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def build_stand_ins(docker: Dockerd, dockerfile: Path) -> list[str]:
    """Build and tag a stand-in for every image the Dockerfile's FROM lines name; fails naming any
    image with no stand-in in STAND_INS."""
    images, args = from_images(dockerfile)
    missing = [image for image in images if repository(image) not in STAND_INS]
    if missing:
        raise LookupError(
            f"{dockerfile}: no stand-in base for {', '.join(missing)}: add a FROM-scratch layout of the "
            "real image to STAND_INS in tests/support/lifecycle/images.py"
        )
    for image in images:
        context = Path(tempfile.mkdtemp(dir=docker.root, prefix="standin-"))
        STAND_INS[repository(image)].populate(context / "rootfs", args)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
        result = docker.build(context, image)
        if result.returncode != 0:
            raise RuntimeError(f"building the stand-in {image} failed:\n{result.output}")
    return images


# --- reading an exported filesystem ----------------------------------------------------------------
class Tree:
    """An exported container filesystem, with path lookup through its symlinks."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.members = {self._norm(m.name): m for m in tar.getmembers()}

    @staticmethod
    def _norm(name: str) -> str:
        return "/" + name.strip("/").removeprefix("./") if name.strip("/") not in ("", ".") else "/"

    def lstat(self, path: str) -> tarfile.TarInfo | None:
        return self.members.get(self._norm(path))

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """The path with every symlink in it followed, or None when some part does not exist."""
        if depth > 40:
            return None
        current = "/"
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            candidate = str(PurePosixPath(current) / part)
            member = self.members.get(candidate)
            if member is None:
                return None
            if member.issym():
                target = member.linkname
                base = "/" if target.startswith("/") else current
                rest = "/".join(parts[i + 1 :])
                joined = (
                    str(PurePosixPath(base) / target / rest) if rest else str(PurePosixPath(base) / target)
                )
                return self.resolve(os.path.normpath(joined), depth + 1)
            current = candidate
        return current

    def exists(self, path: str) -> bool:
        return self.resolve(path) is not None

    def names(self) -> set[str]:
        return set(self.members)


def tree_of(root: Path) -> Tree:
    """A Tree of a directory on disk (a stand-in's rootfs), to compare against an exported image."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(root, arcname=".")
    buffer.seek(0)
    return Tree(tarfile.open(fileobj=buffer))
