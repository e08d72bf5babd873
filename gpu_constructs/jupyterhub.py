"""JupyterHub (Zero to JupyterHub) with GPU profiles placed by the GPU cluster contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdktf_cdktf_provider_helm.release import ReleaseSetSensitive
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost, kube_secret_step, variable_of

NAMESPACE = "jupyterhub"
NODE_PURPOSES = ("ignore", "prefer", "require")
AUTH_KINDS = ("native", "github", "oidc", "dummy")
_CLASSES = {
    "native": "nativeauthenticator.NativeAuthenticator",
    "github": "github",
    "oidc": "generic-oauth",
    "dummy": "dummy",
}
_OAUTH_SECTION = {"github": "GitHubOAuthenticator", "oidc": "GenericOAuthenticator"}
ADMIN_SECRET = "hub-native-admin"
ADMIN_SECRET_KEY = "initial"
"""The key of :data:`ADMIN_SECRET`, in the hub's namespace, that holds the native admin's initial
password."""
ADMIN_PASSWORD_ENV = "GPU_CONSTRUCTS_NATIVE_ADMIN_PASSWORD"
HELM_RESOURCE_POLICY = "helm.sh/resource-policy"
"""On the hub's database claim (z2jh 4.4.0 templates/hub/pvc.yaml renders hub.db.pvc.annotations
onto ``hub-db-dir``), ``keep`` makes ``helm uninstall`` and a release replacement leave the claim,
and with it the users, tokens and native accounts, in place (Helm 3 pkg/action/resource_policy.go
filterManifestsToKeep). The kept claim keeps Helm's ownership label and release annotations, so
a later install of the same release name in the same namespace adopts it (pkg/action/validate.go
checkOwnership); nothing else deletes it but ``kubectl delete pvc`` (docs/proxmox-ha.md)."""
SEED_NATIVE_ADMIN = f"""\
# The admin's account exists before the hub answers /hub/signup (gpu_constructs/jupyterhub.py).
import os

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo


class SeededNativeAuthenticator(NativeAuthenticator):
    \"\"\"Creates each admin's account, approved, at hub start if it does not exist yet.\"\"\"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        initial = os.environ.get("{ADMIN_PASSWORD_ENV}", "").encode()
        if not initial:
            raise ValueError("{ADMIN_PASSWORD_ENV} is empty: the admin account cannot be created")
        for name in sorted(self.admin_users):
            username = self.normalize_username(name)
            if UserInfo.find(self.db, username) is None:
                hashed = bcrypt.hashpw(initial, bcrypt.gensalt())
                self.db.add(UserInfo(username=username, password=hashed, is_authorized=True))
                self.log.info("Created the admin account %s", username)
        self.db.commit()


c.JupyterHub.authenticator_class = SeededNativeAuthenticator
"""
"""hub.extraConfig for ``native``: NativeAuthenticator 1.3.0 (z2jh 4.4.0's hub image,
images/hub/requirements.txt) pre-authorizes a sign-up under any admin name
(nativeauthenticator.py create_user: ``username in self.get_authed_users()``, which includes
admin_users), so whoever signs up first as the admin would become it. The hub creates its
authenticator in JupyterHub.init_users, after init_db and before start() listens (jupyterhub
5.5.0 app.py), so the account exists before anyone can reach /hub/signup; create_user then finds
it and refuses the name. The row is what create_user writes (orm.py UserInfo: a bcrypt hash,
is_authorized); bcrypt 5 refuses passwords over 72 bytes, which the stack's variable checks."""


@dataclass(frozen=True)
class HubAuth:
    """How users log in. The chart's default, DummyAuthenticator, admits anyone with any name and
    password; ``native`` (accounts that an admin approves), ``github`` and ``oidc`` are real ones."""

    kind: str = "native"
    admin_users: Sequence[str] = ()
    """Hub admins. ``native`` needs exactly one, whose account the hub creates at its start with
    ``admin_password`` (it approves the sign-ups); make more admins on the hub's admin page."""
    admin_password: str | None = None
    """native: a reference to a sensitive variable, the admin account's initial password. It is
    written into the :data:`ADMIN_SECRET` Secret from ``JupyterHubProps.secret_host`` and reaches
    the hub as an environment variable, never through the chart's values."""
    allowed_users: Sequence[str] = ()
    allowed_organizations: Sequence[str] = ()
    """github: members of these organizations may log in."""
    allowed_groups: Sequence[str] = ()
    """oidc: members of these groups (the ``groups_claim`` of the user info) may log in."""
    client_id: str | None = None
    client_secret: str | None = None
    """A reference to a sensitive variable; it reaches the chart through set_sensitive only."""
    authorize_url: str | None = None
    token_url: str | None = None
    userdata_url: str | None = None
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    """oidc: the user-info claim that lists the user's groups."""
    scopes: Sequence[str] = ("openid", "profile", "email")
    """oidc: scopes to request; add the provider's groups scope where it needs one (Keycloak)."""

    def __post_init__(self) -> None:
        validate.one_of("auth.kind", self.kind, AUTH_KINDS)
        for name in (*self.admin_users, *self.allowed_users):
            if not name or any(c.isspace() for c in name):
                raise ConfigError("auth.admin_users", name, "give user names without spaces")
        if self.kind == "native":
            if len(self.admin_users) != 1:
                raise ConfigError(
                    "auth.admin_users",
                    tuple(self.admin_users),
                    "the native authenticator needs exactly one admin, whose account the hub creates "
                    "with admin_password (an admin name nobody holds could be claimed by signing up); "
                    "make more admins on the hub's admin page",
                )
            if not self.admin_password or not validate.is_reference(self.admin_password):
                raise ConfigError(
                    "auth.admin_password",
                    "(hidden)" if self.admin_password else None,
                    "pass a reference to a sensitive variable with the admin's initial password",
                )
        if self.kind in _OAUTH_SECTION:
            if not self.client_id:
                raise ConfigError("auth.client_id", self.client_id, "give the OAuth app's client id")
            if not self.client_secret or not validate.is_reference(self.client_secret):
                raise ConfigError(
                    "auth.client_secret",
                    "(hidden)" if self.client_secret else None,
                    "pass a reference to a sensitive variable, never the secret itself",
                )
        if self.kind == "github" and not (self.allowed_organizations or self.allowed_users):
            raise ConfigError(
                "auth.allowed_organizations",
                (),
                "OAuthenticator admits no one without an allow rule: give organizations or users",
            )
        if self.kind == "oidc":
            for name in ("authorize_url", "token_url", "userdata_url"):
                url = getattr(self, name)
                if not url or not (url.startswith("https://") or validate.is_reference(url)):
                    raise ConfigError(f"auth.{name}", url, "give the provider's https:// endpoint")
            if not (self.allowed_groups or self.allowed_users):
                raise ConfigError(
                    "auth.allowed_groups",
                    (),
                    "OAuthenticator admits no one without an allow rule: give groups or users",
                )

    def values(self, host: str) -> dict[str, Any]:
        """The chart's hub.config for this authenticator, without the client secret."""
        config: dict[str, Any] = {"JupyterHub": {"authenticator_class": _CLASSES[self.kind]}}
        authenticator: dict[str, Any] = {}
        if self.admin_users:
            authenticator["admin_users"] = sorted(self.admin_users)
        if self.allowed_users:
            authenticator["allowed_users"] = sorted(self.allowed_users)
        if self.kind == "native":
            # NativeAuthenticator.authenticate refuses accounts an admin has not approved
            # (nativeauthenticator.py, `user.is_authorized`), so every account it lets through is allowed.
            authenticator["allow_all"] = True
            config["NativeAuthenticator"] = {"open_signup": False}
        if authenticator:
            config["Authenticator"] = authenticator
        hub: dict[str, Any] = {"config": config}
        if self.kind == "native":
            hub["extraConfig"] = {"gpu-constructs-native-admin": SEED_NATIVE_ADMIN}
            # no `optional`: without the Secret the hub does not start, rather than start open
            hub["extraEnv"] = {
                ADMIN_PASSWORD_ENV: {
                    "valueFrom": {"secretKeyRef": {"name": ADMIN_SECRET, "key": ADMIN_SECRET_KEY}}
                }
            }
        if self.kind in _OAUTH_SECTION:
            oauth: dict[str, Any] = {
                "client_id": self.client_id,
                "oauth_callback_url": f"https://{host}/hub/oauth_callback",
            }
            if self.kind == "github":
                oauth["scope"] = ["read:org"]
                if self.allowed_organizations:
                    oauth["allowed_organizations"] = sorted(self.allowed_organizations)
            else:
                # OAuthenticator 17 (z2jh 4.x): groups come from auth_state_groups_key and need
                # manage_groups; its deprecated claim_groups_key without manage_groups stops the hub
                # (oauthenticator/generic.py).
                oauth.update(
                    {
                        "authorize_url": self.authorize_url,
                        "token_url": self.token_url,
                        "userdata_url": self.userdata_url,
                        "scope": list(self.scopes),
                        "username_claim": self.username_claim,
                        "manage_groups": True,
                        "auth_state_groups_key": f"oauth_user.{self.groups_claim}",
                    }
                )
                if self.allowed_groups:
                    oauth["allowed_groups"] = sorted(self.allowed_groups)
            config[_OAUTH_SECTION[self.kind]] = oauth
        return {"hub": hub}

    def sensitive_values(self) -> list[ReleaseSetSensitive]:
        if self.kind not in _OAUTH_SECTION or not self.client_secret:
            return []
        return [
            ReleaseSetSensitive(
                name=f"hub.config.{_OAUTH_SECTION[self.kind]}.client_secret",
                value=self.client_secret,
                type="string",
            )
        ]


@dataclass(frozen=True)
class JupyterHubProps:
    cluster: GpuCluster
    host: str
    """Public host name of the hub (a variable reference allowed)."""
    home_storage_class: str
    """Class of the persistent home volumes (the seed: NFS)."""
    scratch_storage_class: str
    """Class of the per-session scratch volume (the seed: local NVMe)."""
    auth: HubAuth
    """How users log in; never the chart's DummyAuthenticator on a public hub."""
    secret_host: SshHost | None = None
    """A k3s server the admin password Secret is written from with k3s' kubectl (over SSH, through
    an uploaded secrets file); required with ``native`` auth."""
    secret_after: Sequence[Any] = ()
    """Steps the admin Secret's step runs after. Each kube-secret.sh step has a secrets file of its
    own (:func:`~gpu_constructs.hostexec.kube_secret_step`), so none is needed for that."""
    hub_db_storage_class: str | None = None
    """Class of the hub's SQLite database volume (hub.db.pvc.storageClassName); None: the cluster's
    default. Never an NFS class: JupyterHub's docs ("The Hub's Database", Notes and Tips): "The
    SQLite database should not be used on NFS", its locks may not work there."""
    public: bool = True
    """Served by an Ingress with a public TLS host."""
    values: helm.ValuesLayers | None = None
    gpu_profiles: Sequence[int] = (0, 1, 2, 4)
    """GPUs per profile; 0 is the CPU-only profile and the default."""
    home_size: str = "50Gi"
    scratch_size: str = "200Gi"
    cull_timeout_seconds: int = 3600
    """Idle servers are stopped after this long (the seed: one hour)."""
    cluster_issuer: str = "letsencrypt-production"
    ingress_class: str = "traefik"
    pytorch_image: str = versions.NGC_PYTORCH_IMAGE.version
    tensorflow_image: str = versions.NGC_TENSORFLOW_IMAGE.version
    chart_version: str = versions.JUPYTERHUB_CHART.version
    user_node_purpose: str = "prefer"
    """z2jh's matchNodePurpose for user pods: ``require`` keeps every notebook, CPU-only ones
    included, on nodes labelled hub.jupyter.org/node-purpose=user (never on the control planes)."""
    cpu_on_gpu_nodes: bool = False
    """CPU-only notebooks tolerate the GPU taint, where the GPU workers are the user nodes."""
    start_timeout_seconds: int = 1800
    """How long a notebook may take to start: the first on a node pulls a 10-20 GB NGC image
    unless the continuous puller got there first."""
    depends_on: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate.unique("gpu_profiles", (str(g) for g in self.gpu_profiles))
        for gpus in self.gpu_profiles:
            validate.int_range("gpu_profiles", gpus, 0, 8)
        if 0 not in self.gpu_profiles:
            raise ConfigError("gpu_profiles", tuple(self.gpu_profiles), "keep a 0-GPU profile as the default")
        validate.storage_size("home_size", self.home_size)
        validate.storage_size("scratch_size", self.scratch_size)
        validate.int_range("cull_timeout_seconds", self.cull_timeout_seconds, 300)
        validate.one_of("user_node_purpose", self.user_node_purpose, NODE_PURPOSES)
        validate.int_range("start_timeout_seconds", self.start_timeout_seconds, 60, 7200)
        if self.auth.kind == "native" and self.secret_host is None:
            raise ConfigError(
                "secret_host",
                None,
                "native auth creates the admin account from a Secret written on a k3s server: give the "
                "server's SshHost",
            )
        if self.public and self.auth.kind == "dummy":
            raise ConfigError(
                "auth.kind",
                "dummy",
                "DummyAuthenticator lets anyone in with any name and password; a public hub needs "
                "native, github or oidc",
            )


class JupyterHub(Construct):
    """The hub, with 0/1/2/4-GPU profiles, NGC images, NFS homes, NVMe scratch and idle culling."""

    def __init__(self, scope: Construct, id: str, *, props: JupyterHubProps) -> None:
        super().__init__(scope, id)
        self.props = props
        largest = max(props.gpu_profiles)
        props.cluster.check_gpu_demand("gpu_profiles", 1, largest)
        props.cluster.check_pod_fits("gpu_profiles", largest)
        layered = props.values.load("jupyterhub") if props.values else {}
        self.values = helm.deep_merge(
            helm.deep_merge(layered, self.contract_values()), props.auth.values(props.host)
        )
        self.admin_secret = None
        depends_on = list(props.depends_on)
        auth = props.auth
        if auth.kind == "native":
            assert props.secret_host is not None and auth.admin_password is not None
            self.admin_secret = kube_secret_step(
                self,
                "admin-password",
                host=props.secret_host,
                namespace=NAMESPACE,
                secret_name=ADMIN_SECRET,
                values={ADMIN_SECRET_KEY: auth.admin_password},
                variables={ADMIN_SECRET_KEY: variable_of(auth.admin_password) or "auth.admin_password"},
                cluster=props.cluster,
                depends_on=props.secret_after,
            )
            depends_on.append(self.admin_secret)
        self.release = helm.release(
            self,
            "jupyterhub",
            cluster=props.cluster,
            name="jupyterhub",
            chart="jupyterhub",
            repository=versions.REPO_JUPYTERHUB,
            version=props.chart_version,
            namespace=NAMESPACE,
            values=self.values,
            depends_on=depends_on,
            timeout=900,
        )
        secrets = props.auth.sensitive_values()
        if secrets:
            self.release.put_set_sensitive(secrets)

    def profile(self, gpus: int) -> dict[str, Any]:
        props = self.props
        images = {
            "pytorch": {
                "display_name": "PyTorch (NVIDIA NGC)",
                "kubespawner_override": {"image": props.pytorch_image},
            },
            "tensorflow": {
                "display_name": "TensorFlow (NVIDIA NGC)",
                "kubespawner_override": {"image": props.tensorflow_image},
            },
        }
        profile: dict[str, Any] = {
            "display_name": f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "CPU only",
            "slug": f"gpu-{gpus}",
            "description": f"{gpus} NVIDIA GPU(s) on a GPU worker"
            if gpus
            else "No GPU; for editing and light work",
            "profile_options": {"image": {"display_name": "Image", "choices": images}},
        }
        if gpus:
            cluster = props.cluster
            spec = cluster.gpu_pod_spec()
            override: dict[str, Any] = {
                "extra_resource_limits": {GPU_RESOURCE: str(gpus)},
                "extra_resource_guarantees": {GPU_RESOURCE: str(gpus)},
                "tolerations": spec["tolerations"],
                "node_selector": spec["nodeSelector"],
            }
            if cluster.runtime_class:
                override["extra_pod_config"] = {"runtimeClassName": cluster.runtime_class}
            profile["kubespawner_override"] = override
        else:
            profile["default"] = True
            # NGC images set NVIDIA_VISIBLE_DEVICES=all; where the NVIDIA runtime is containerd's
            # default (the GPU Operator's toolkit can make it so), a CPU-only notebook on a GPU
            # worker would see every GPU of the node past the device plugin. "void" gives it none
            # (NVIDIA container toolkit: NVIDIA_VISIBLE_DEVICES=void|none). The override sets
            # KubeSpawner's environment for this profile: singleuser.extraEnv would need to be here too.
            profile["kubespawner_override"] = {"environment": {"NVIDIA_VISIBLE_DEVICES": "void"}}
        return profile

    def contract_values(self) -> dict[str, Any]:
        props = self.props
        hub_db_pvc: dict[str, Any] = {"annotations": {HELM_RESOURCE_POLICY: "keep"}}
        if props.hub_db_storage_class:
            hub_db_pvc["storageClassName"] = props.hub_db_storage_class
        return {
            "hub": {"db": {"pvc": hub_db_pvc}},
            "scheduling": {"userPods": {"nodeAffinity": {"matchNodePurpose": props.user_node_purpose}}},
            "singleuser": {
                "startTimeout": props.start_timeout_seconds,
                "extraTolerations": [props.cluster.gpu_toleration] if props.cpu_on_gpu_nodes else [],
                "image": {
                    "name": props.pytorch_image.rsplit(":", 1)[0],
                    "tag": props.pytorch_image.rsplit(":", 1)[1],
                },
                "profileList": [self.profile(gpus) for gpus in sorted(props.gpu_profiles)],
                "storage": {
                    "type": "dynamic",
                    "capacity": props.home_size,
                    "dynamic": {"storageClass": props.home_storage_class},
                    "extraVolumes": [
                        {
                            "name": "scratch",
                            "ephemeral": {
                                "volumeClaimTemplate": {
                                    "spec": {
                                        "accessModes": ["ReadWriteOnce"],
                                        "storageClassName": props.scratch_storage_class,
                                        "resources": {"requests": {"storage": props.scratch_size}},
                                    }
                                }
                            },
                        }
                    ],
                    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                },
            },
            # The continuous puller pulls the profiles' NGC images onto every user node it tolerates
            # (with the GPU taint tolerated, the GPU workers). The install-time hook is off: its
            # awaiter Job holds the whole release until every node has every image, which for
            # 10-20 GB NGC images outlasts the release's timeout and rolls the atomic install
            # back. The continuous DaemonSet does not hold the install: its rollingUpdate
            # maxUnavailable is 100% (templates/image-puller/_helpers-daemonset.tpl), so Helm's
            # wait needs none of its pods ready.
            "prePuller": {
                # singleuser.extraTolerations reach the pullers too
                "extraTolerations": [] if props.cpu_on_gpu_nodes else [props.cluster.gpu_toleration],
                "hook": {"enabled": False},
                "continuous": {"enabled": True},
            },
            "cull": {"enabled": True, "timeout": props.cull_timeout_seconds, "every": 300},
            "proxy": {"service": {"type": "ClusterIP"}},
            "ingress": {
                "enabled": props.public,
                "ingressClassName": props.ingress_class,
                "annotations": {"cert-manager.io/cluster-issuer": props.cluster_issuer},
                "hosts": [props.host],
                "tls": [{"hosts": [props.host], "secretName": "jupyterhub-tls"}],
            },
        }
