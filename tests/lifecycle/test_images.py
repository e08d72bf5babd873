"""Gate: every Dockerfile the project ships is built by real BuildKit, offline, and the image's
filesystem is what the stacks expect.

A private dockerd (Debian's docker.io, see tests/support/lifecycle/images.py) builds each ``docker/**/Dockerfile``
with ``DOCKER_BUILDKIT=1`` and ``--network=none`` on stand-in base images that have the real images'
layout and names. The built image is exported (``docker create`` + ``docker export``) and read with
tarfile. What this proves: the Dockerfile parses with the daemon's built-in frontend, every step runs,
COPY between the real layouts works, and the result has the paths k3d and k3s use. What it cannot
prove: the real base images' full content, NVIDIA's apt repository serving the pinned packages, or
that k3s starts with the GPU runtime (that is `make verify STACK=k3d-poc` on a GPU host).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.support import render
from tests.support.lifecycle import images
from tests.support.lifecycle.images import Dockerd, DockerUnavailable, Tree

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("docker/**/Dockerfile"))
K3S_CUDA = ROOT / "docker" / "k3s-cuda" / "Dockerfile"
NOTEBOOKS = sorted(ROOT.glob("docker/notebook-*/Dockerfile"))
Z2JH_CHART = render.CHARTS / "jupyterhub-4.4.0" / "Chart.yaml"


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    root = Path(tempfile.mkdtemp(prefix="gate-dockerd-"))
    daemon = Dockerd(root)
    try:
        daemon.start()
    except DockerUnavailable as error:
        unavailable(f"no dockerd to build images with: {error}")
    try:
        yield daemon
    finally:
        daemon.stop()
        log = daemon.log()
        if daemon.proc is not None and daemon.proc.returncode not in (0, -15):
            print(f"dockerd exited with {daemon.proc.returncode}:\n{log}")
        _remove(root)


def _remove(root: Path) -> None:
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def _build(daemon: Dockerd, dockerfile: Path, tag: str) -> images.BuildResult:
    images.build_stand_ins(daemon, dockerfile)
    result = daemon.build(dockerfile.parent, tag, dockerfile)
    if result.returncode != 0:
        print(daemon.log())
    return result


@pytest.fixture(scope="module")
def built(dockerd: Dockerd) -> dict[Path, Tree]:
    """Every shipped Dockerfile, built once; a failed build fails the tests that read it."""
    trees: dict[Path, Tree] = {}
    for number, dockerfile in enumerate(DOCKERFILES):
        tag = f"gate-image-{number}:test"
        result = _build(dockerd, dockerfile, tag)
        assert result.returncode == 0, (
            f"{dockerfile.relative_to(ROOT)} does not build:\n{result.output[-4000:]}"
        )
        trees[dockerfile] = Tree(dockerd.export(tag))
    return trees


def test_the_project_ships_dockerfiles():
    assert K3S_CUDA in DOCKERFILES


# what `docker export` adds to every container's filesystem
EXPORT_ENTRIES = {
    "/.dockerenv",
    "/dev",
    "/proc",
    "/sys",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/mtab",
}


def _bases(dockerfile: Path, tmp_path: Path) -> list[Tree]:
    """The stand-in bases the Dockerfile builds on, read from disk; the last is the final stage's."""
    names, args = images.from_images(dockerfile)
    trees = []
    for number, name in enumerate(names):
        root = tmp_path / f"base-{number}"
        images.STAND_INS[images.repository(name)].populate(root, args)
        trees.append(images.tree_of(root))
    return trees


def _stray(tree: Tree, dockerfile: Path, tmp_path: Path) -> list[str]:
    """Top-level paths that no base has and the Dockerfile does not name (a copy landing beside its
    target, like /lib.k3s), and paths that repeat a directory in themselves (a copy landing inside
    its target, like /usr/bin/bin)."""
    known = set(EXPORT_ENTRIES)
    for base in _bases(dockerfile, tmp_path / "stray"):
        known |= {name for name in base.names() if name.count("/") == 1}
    text = dockerfile.read_text()
    stray = []
    for name in sorted(tree.names()):
        parts = [p for p in name.split("/") if p]
        nested = any(a == b for a, b in itertools.pairwise(parts))
        if nested or (name != "/" and f"/{parts[0]}" not in known and f"/{parts[0]}" not in text):
            stray.append(name)
    return stray


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dockerfile_builds_offline_and_keeps_its_bases_symlinks(built, dockerfile, tmp_path):
    """Built with no network on the stand-in bases; every symlink of the final base (merged /usr's
    /bin, /lib, /var/run) is still that symlink, and nothing landed on a stray path."""
    tree = built[dockerfile]
    base = _bases(dockerfile, tmp_path)[-1]
    for name, member in base.members.items():
        if member.issym() and name.count("/") <= 2:
            got = tree.lstat(name)
            assert got is not None and got.issym() and got.linkname == member.linkname, (
                f"{name} was the base's symlink to {member.linkname}; in the image: "
                f"{'missing' if got is None else ('symlink to ' + got.linkname) if got.issym() else 'a directory'}"
            )
    assert _stray(tree, dockerfile, tmp_path) == []


def test_a_copy_to_a_stray_path_is_caught(dockerd, tmp_path):
    """Break it: k3s's /lib copied beside Ubuntu's (the usual workaround for the symlink clash)."""
    copies = "COPY --from=k3s /bin /bin\nCOPY --from=k3s /etc /etc\nCOPY --from=k3s /lib /lib.k3s"
    result = _build(dockerd, _variant(tmp_path, copies), "gate-stray:test")
    assert result.returncode == 0, result.output[-3000:]
    stray = _stray(Tree(dockerd.export("gate-stray:test")), K3S_CUDA, tmp_path / "bases")
    assert stray == ["/lib.k3s", "/lib.k3s/firmware", "/lib.k3s/modules"]


def _k3s_missing(tree: Tree, tmp_path: Path) -> list[str]:
    """Files and links of the k3s image that are not in the node image at the same path (through
    the node image's symlinks)."""
    k3s_root = tmp_path / "k3s"
    images.k3s_tree(k3s_root)
    k3s = images.tree_of(k3s_root)
    return sorted(
        name
        for name, member in k3s.members.items()
        if (member.isfile() or member.issym()) and not tree.exists(name) and not tree.lstat(name)
    )


def test_the_k3s_cuda_image_has_all_of_k3s_and_the_toolkit(built, dockerd, tmp_path):
    tree = built[K3S_CUDA]
    assert _k3s_missing(tree, tmp_path) == [], "k3s paths missing from the node image"
    k3s_bin = tree.resolve("/bin/k3s")
    assert k3s_bin == "/usr/bin/k3s" and tree.members[k3s_bin].isfile()
    assert tree.resolve("/bin/aux/iptables") == "/usr/bin/aux/iptables"
    assert tree.resolve("/bin/kubectl") == "/usr/bin/k3s"
    assert tree.resolve("/bin/flannel") == "/usr/bin/cni"
    assert tree.resolve("/etc/nsswitch.conf") == "/etc/nsswitch.conf"
    assert tree.resolve("/lib/modules") == "/usr/lib/modules"
    assert tree.members["/tmp"].mode & 0o1777 == 0o1777
    for files in images.TOOLKIT_FILES.values():
        for path in files:
            assert tree.exists(f"/{path}"), f"toolkit file /{path} missing"
    assert tree.resolve("/bin/nvidia-container-runtime") == "/usr/bin/nvidia-container-runtime"
    (config,) = json.loads(
        dockerd.docker("image", "inspect", f"gate-image-{DOCKERFILES.index(K3S_CUDA)}:test").stdout
    )
    env = dict(e.split("=", 1) for e in config["Config"]["Env"])
    assert env["PATH"].split(":")[-1] == "/bin/aux"
    # k3s needs no CUDA: the node starts on a host whose driver is older than the CUDA base's.
    assert env["NVIDIA_DISABLE_REQUIRE"] == "true"
    assert config["Config"]["Entrypoint"] == ["/bin/k3s"] and config["Config"]["Cmd"] == ["agent"]
    assert set(config["Config"]["Volumes"]) == {
        "/var/lib/kubelet",
        "/var/lib/rancher/k3s",
        "/var/lib/cni",
        "/var/log",
    }


def _variant(tmp_path: Path, replace: str) -> Path:
    """The shipped Dockerfile with its k3s COPY lines replaced."""
    lines = K3S_CUDA.read_text().splitlines()
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY --from=k3s")]
    lines[copies[0] : copies[-1] + 1] = replace.splitlines()
    path = tmp_path / "Dockerfile"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("copy", "stops_at"),
    [("COPY --from=k3s / /", "/bin"), ("COPY --from=k3s /bin /bin\nCOPY --from=k3s /var /var", "/var/run")],
)
def test_copying_k3s_directories_onto_merged_usr_symlinks_fails_in_buildkit(
    dockerd, tmp_path, copy, stops_at
):
    """Break it: the old `COPY --from=k3s / /` stops BuildKit where a k3s directory (/bin, /lib,
    /var/run) meets one of Ubuntu's symlinks; the first is /bin."""
    result = _build(dockerd, _variant(tmp_path, copy), "gate-broken:test")
    assert result.returncode != 0
    error = [line for line in result.output.splitlines() if "cannot copy to non-directory" in line]
    assert error and error[0].endswith(stops_at), result.output[-3000:]


def test_a_node_image_without_k3s_etc_is_caught(dockerd, tmp_path):
    """Break it: dropping a top-level COPY (here /etc) leaves k3s's files out, and the check names them."""
    lines = "COPY --from=k3s /bin /bin\nCOPY --from=k3s /lib /lib\nCOPY --from=k3s /usr/share/zoneinfo /usr/share/zoneinfo"
    result = _build(dockerd, _variant(tmp_path, lines), "gate-noetc:test")
    assert result.returncode == 0, result.output[-3000:]
    missing = _k3s_missing(Tree(dockerd.export("gate-noetc:test")), tmp_path)
    assert "/etc/nsswitch.conf" in missing and not any(m.startswith("/bin") for m in missing)


def test_copy_exclude_needs_a_frontend_image_from_a_registry(dockerd, tmp_path):
    """Break it: without the `# syntax=docker/dockerfile:1.7-labs` image (pulled from Docker Hub) the
    daemon's built-in frontend rejects COPY --exclude."""
    result = _build(
        dockerd,
        _variant(tmp_path, "COPY --from=k3s --exclude=/bin / /\nCOPY --from=k3s /bin /bin"),
        "gate-old:test",
    )
    assert result.returncode != 0
    assert "exclude" in result.output.lower(), result.output[-3000:]


def test_the_toolkit_stub_refuses_what_the_real_repository_would(dockerd, tmp_path):
    """Break it: the install step without NVIDIA's signed apt source finds no package, as apt would."""
    text = K3S_CUDA.read_text().replace(
        "> /etc/apt/sources.list.d/nvidia-container-toolkit.list", "> /dev/null"
    )
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    result = _build(dockerd, path, "gate-norepo:test")
    assert result.returncode != 0
    assert "Unable to locate package nvidia-container-toolkit" in result.output, result.output[-3000:]


def test_a_dockerfile_without_stand_ins_fails_naming_what_to_add(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG TAG=12\nFROM debian:${TAG} AS base\nFROM base\n")
    with pytest.raises(LookupError, match=r"no stand-in base for debian:12: add .* STAND_INS"):
        images.build_stand_ins(Dockerd(tmp_path), dockerfile)


# --- notebook images --------------------------------------------------------------------------------
def _config(dockerd: Dockerd, tag: str) -> dict:
    (config,) = json.loads(dockerd.docker("image", "inspect", tag).stdout)
    result: dict = config["Config"]
    return result


def _on_path(tree: Tree, config: dict, command: str) -> str | None:
    """Where ``command`` resolves on the image's PATH, as the container runtime's exec looks it up."""
    env = dict(e.split("=", 1) for e in config.get("Env") or [])
    for directory in env.get("PATH", "").split(":"):
        found = tree.resolve(f"{directory}/{command}")
        if found and tree.members[found].isfile() and tree.members[found].mode & 0o111:
            return found
    return None


def test_the_notebook_images_pin_the_ngc_bases_and_the_hubs_jupyterhub():
    """The Dockerfiles' defaults are the stack's pins: NGC's images (versions.py) and the
    JupyterHub of the z2jh chart's hub image (its Chart.yaml appVersion)."""
    import yaml

    from gpu_constructs import versions

    assert [p.parent.name for p in NOTEBOOKS] == ["notebook-pytorch", "notebook-tensorflow"]
    bases = {p.parent.name: images.from_images(p) for p in NOTEBOOKS}
    assert bases["notebook-pytorch"][0] == [versions.NGC_PYTORCH_IMAGE.version]
    assert bases["notebook-tensorflow"][0] == [versions.NGC_TENSORFLOW_IMAGE.version]
    for _, args in bases.values():
        assert args["JUPYTERHUB_VERSION"] == versions.JUPYTERHUB_SINGLEUSER.version
    if not Z2JH_CHART.exists():
        unavailable(f"{Z2JH_CHART} is absent: the hub's JupyterHub version cannot be compared")
    hub = yaml.safe_load(Z2JH_CHART.read_text())["appVersion"]
    assert {args["JUPYTERHUB_VERSION"] for _, args in bases.values()} == {hub}


@pytest.mark.parametrize("dockerfile", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_every_notebook_image_starts_jupyterhub_singleuser(built, dockerd, dockerfile):
    """z2jh runs `jupyterhub-singleuser` in the image (values.yaml singleuser.cmd) as uid 1000:
    it must be on the image's PATH, from the pinned JupyterHub."""
    tree = built[dockerfile]
    config = _config(dockerd, f"gate-image-{DOCKERFILES.index(dockerfile)}:test")
    assert _on_path(tree, config, "jupyterhub-singleuser") == "/usr/local/bin/jupyterhub-singleuser"
    _, args = images.from_images(dockerfile)
    assert tree.lstat(
        f"/usr/local/lib/python3.12/dist-packages/jupyterhub-{args['JUPYTERHUB_VERSION']}.dist-info"
    )
    assert config["User"] == "1000" and config["Cmd"] == ["jupyterhub-singleuser"]
    assert tree.members["/home/jovyan"].uid == 1000


def test_a_notebook_image_without_jupyterhub_is_caught(dockerd, tmp_path):
    """Break it: the bare NGC image (no pip install) has no jupyterhub-singleuser on its PATH."""
    dockerfile = NOTEBOOKS[0]
    text = dockerfile.read_text()
    start = text.index("RUN python3 -m pip install")
    end = text.index("command -v jupyterhub-singleuser") + len("command -v jupyterhub-singleuser")
    path = tmp_path / "Dockerfile"
    path.write_text(text[:start] + text[end + 1 :])
    result = _build(dockerd, path, "gate-nohub:test")
    assert result.returncode == 0, result.output[-3000:]
    tree = Tree(dockerd.export("gate-nohub:test"))
    assert _on_path(tree, _config(dockerd, "gate-nohub:test"), "jupyterhub-singleuser") is None
