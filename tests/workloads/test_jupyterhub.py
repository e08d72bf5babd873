from __future__ import annotations

import base64
import json
import sys
import types

import pytest
import yaml

from gpu_constructs.cluster import K3S_CONTAINERD, Manager
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost
from gpu_constructs.jupyterhub import (
    ADMIN_PASSWORD_ENV,
    ADMIN_SECRET,
    ADMIN_SECRET_KEY,
    SEED_NATIVE_ADMIN,
    HubAuth,
    JupyterHub,
    JupyterHubProps,
)
from tests.conftest import make_cluster, release_values, resources
from tests.support.validators import validate_values

SERVER = SshHost("10.0.0.11", "ubuntu", "~/.ssh/id_ed25519")


def hub_values(synth, cluster=None, **overrides):
    cluster = cluster or make_cluster(
        driver=Manager.OPERATOR, toolkit=Manager.OPERATOR, containerd=K3S_CONTAINERD, gpu_capacity=8
    )
    fields = {
        "cluster": cluster,
        "host": "jupyter.example.com",
        "home_storage_class": "nfs-client",
        "scratch_storage_class": "fast-scratch",
        "auth": NATIVE,
        "secret_host": SERVER,
    }
    fields.update(overrides)
    synthesized = synth(lambda stack: JupyterHub(stack, "hub", props=JupyterHubProps(**fields)))
    (release,) = resources(synthesized, "helm_release").values()
    assert (release["chart"], release["version"]) == ("jupyterhub", "4.4.0")
    return release_values(release)


NATIVE = HubAuth(admin_users=("ops-lead",), admin_password="${var.jupyterhub_admin_password}")
GITHUB = HubAuth(
    kind="github",
    admin_users=("octocat",),
    allowed_organizations=("acme",),
    client_id="Iv1.abc",
    client_secret="${var.jupyterhub_oauth_client_secret}",
)


def test_profiles_with_0_1_2_4_gpus_placed_by_the_contract(synth):
    profiles = hub_values(synth)["singleuser"]["profileList"]
    assert [p["slug"] for p in profiles] == ["gpu-0", "gpu-1", "gpu-2", "gpu-4"]
    assert profiles[0]["default"] is True
    assert profiles[0]["kubespawner_override"] == {"environment": {"NVIDIA_VISIBLE_DEVICES": "void"}}
    four = profiles[3]["kubespawner_override"]
    assert four["extra_resource_limits"] == {"nvidia.com/gpu": "4"}
    assert four["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert four["node_selector"] == {"nvidia.com/gpu": "true"}
    assert four["extra_pod_config"] == {"runtimeClassName": "nvidia"}


def test_ngc_images_nfs_home_scratch_and_culling(synth):
    values = hub_values(synth)
    choices = values["singleuser"]["profileList"][1]["profile_options"]["image"]["choices"]
    assert choices["pytorch"]["kubespawner_override"]["image"].startswith("nvcr.io/nvidia/pytorch:")
    assert choices["tensorflow"]["kubespawner_override"]["image"].startswith("nvcr.io/nvidia/tensorflow:")
    storage = values["singleuser"]["storage"]
    assert storage["dynamic"]["storageClass"] == "nfs-client"
    scratch = storage["extraVolumes"][0]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert scratch["storageClassName"] == "fast-scratch"
    assert storage["extraVolumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert values["cull"] == {"enabled": True, "timeout": 3600, "every": 300}


def test_values_match_the_chart_schema(synth, upstream):
    validate_values(
        hub_values(synth),
        upstream / "jupyterhub" / "values.schema.yaml",
        upstream / "jupyterhub" / "values.yaml",
    )


def test_a_profile_larger_than_the_cluster_fails(synth):
    with pytest.raises(
        ConfigError, match=r"'gpu_profiles' is 1: 1 pods x 4 GPU need 4 GPU slots but cluster 'test' has 2"
    ):
        hub_values(synth, cluster=make_cluster(gpu_capacity=2))


def test_a_cpu_profile_is_required():
    with pytest.raises(ConfigError, match=r"'gpu_profiles' is \(1, 2\): keep a 0-GPU profile"):
        JupyterHubProps(
            cluster=make_cluster(),
            host="h.example.com",
            home_storage_class="a",
            scratch_storage_class="b",
            auth=NATIVE,
            secret_host=SERVER,
            gpu_profiles=(1, 2),
        )


def hub_release(synth, **overrides):
    fields = {
        "cluster": make_cluster(gpu_capacity=8),
        "host": "jupyter.example.com",
        "home_storage_class": "nfs-client",
        "scratch_storage_class": "fast-scratch",
        "gpu_profiles": (0, 1),
        "secret_host": SERVER,
    }
    fields.update(overrides)
    synthesized = synth(lambda stack: JupyterHub(stack, "hub", props=JupyterHubProps(**fields)))
    (release,) = resources(synthesized, "helm_release").values()
    return release


def test_native_authenticator_with_admin_approval(synth, upstream):
    values = release_values(hub_release(synth, auth=NATIVE))
    config = values["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "nativeauthenticator.NativeAuthenticator"
    assert config["Authenticator"] == {"admin_users": ["ops-lead"], "allow_all": True}
    assert config["NativeAuthenticator"] == {"open_signup": False}
    validate_values(
        values, upstream / "jupyterhub" / "values.schema.yaml", upstream / "jupyterhub" / "values.yaml"
    )


def test_github_oauth_secret_only_through_set_sensitive(synth, upstream):
    release = hub_release(synth, auth=GITHUB)
    config = release_values(release)["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "github"
    assert config["GitHubOAuthenticator"] == {
        "client_id": "Iv1.abc",
        "oauth_callback_url": "https://jupyter.example.com/hub/oauth_callback",
        "allowed_organizations": ["acme"],
        "scope": ["read:org"],
    }
    assert release["set_sensitive"] == [
        {
            "name": "hub.config.GitHubOAuthenticator.client_secret",
            "value": "${var.jupyterhub_oauth_client_secret}",
            "type": "string",
        }
    ]
    assert "client_secret" not in release["values"][0]


def test_generic_oidc(synth):
    auth = HubAuth(
        kind="oidc",
        allowed_groups=("ml",),
        client_id="hub",
        client_secret="${var.s}",
        authorize_url="https://id.example.com/auth",
        token_url="https://id.example.com/token",
        userdata_url="https://id.example.com/userinfo",
    )
    config = release_values(hub_release(synth, auth=auth))["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "generic-oauth"
    oidc = config["GenericOAuthenticator"]
    # OAuthenticator 17: allowed_groups needs manage_groups and auth_state_groups_key, and the
    # deprecated claim_groups_key without manage_groups would stop the hub at start.
    assert (oidc["allowed_groups"], oidc["manage_groups"], oidc["auth_state_groups_key"]) == (
        ["ml"],
        True,
        "oauth_user.groups",
    )
    assert "claim_groups_key" not in oidc and oidc["scope"] == ["openid", "profile", "email"]
    assert oidc["username_claim"] == "preferred_username"


def test_a_public_hub_never_runs_the_dummy_authenticator(synth):
    with pytest.raises(ConfigError, match=r"'auth.kind' is 'dummy': DummyAuthenticator lets anyone in"):
        hub_release(synth, auth=HubAuth(kind="dummy"))
    private = release_values(hub_release(synth, auth=HubAuth(kind="dummy"), public=False))
    assert private["ingress"]["enabled"] is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, r"'auth.admin_users' is \(\): the native authenticator needs exactly one admin"),
        (
            {"admin_users": ("a", "b"), "admin_password": "${var.p}"},
            r"'auth.admin_users' is \('a', 'b'\): the native authenticator needs exactly one admin",
        ),
        (
            {"admin_users": ("a",)},
            r"'auth.admin_password' is None: pass a reference to a sensitive variable",
        ),
        (
            {"admin_users": ("a",), "admin_password": "hunter2hunter2hunter2"},
            r"'auth.admin_password' is '\(hidden\)': pass a reference to a sensitive variable",
        ),
        ({"kind": "ldap"}, r"'auth.kind' is 'ldap': use one of native, github, oidc, dummy"),
        (
            {"kind": "github", "client_id": "x", "client_secret": "plain-secret", "allowed_users": ("a",)},
            r"'auth.client_secret' is '\(hidden\)': pass a reference to a sensitive variable",
        ),
        (
            {"kind": "github", "client_id": "x", "client_secret": "${var.s}"},
            r"'auth.allowed_organizations' is \(\): OAuthenticator admits no one",
        ),
        (
            {
                "kind": "oidc",
                "client_id": "x",
                "client_secret": "${var.s}",
                "allowed_groups": ("g",),
                "authorize_url": "http://id.example.com/auth",
            },
            r"'auth.authorize_url' is 'http://id.example.com/auth': give the provider's https:// endpoint",
        ),
    ],
)
def test_bad_auth_fails_at_synth(fields, message):
    with pytest.raises(ConfigError, match=message):
        HubAuth(**fields)


def test_no_public_hub_in_any_stack_admits_anyone():
    """Every JupyterHub that main.py deploys behind an Ingress names a real authenticator."""
    import json

    import cdktf

    import main

    hubs = 0
    for instance in main.INSTANCES:
        stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
        for release in resources(stack, "helm_release").values():
            if release["chart"] != "jupyterhub":
                continue
            values = release_values(release)
            hubs += 1
            assert values["ingress"]["enabled"] is True
            authenticator = values["hub"]["config"]["JupyterHub"]["authenticator_class"]
            assert authenticator in ("nativeauthenticator.NativeAuthenticator", "github", "generic-oauth")
    assert hubs


def test_stack_oauth_variables_are_sensitive():
    import json

    import cdktf

    import main
    from environments import Instance

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    built = Instance(
        "proxmox-ha",
        "proxmox-ha",
        {**instance.overrides, "jupyter_auth": "github", "jupyter_github_organizations": ("acme",)},
    ).build(cdktf.Testing.app())
    stack = json.loads(cdktf.Testing.synth(built))
    assert stack["variable"]["jupyterhub_oauth_client_secret"]["sensitive"] is True
    (hub,) = [r for r in resources(stack, "helm_release").values() if r["chart"] == "jupyterhub"]
    assert hub["set_sensitive"][0]["value"] == "${var.jupyterhub_oauth_client_secret}"
    config = release_values(hub)["hub"]["config"]
    assert config["GitHubOAuthenticator"]["client_id"] == "${var.jupyterhub_oauth_client_id}"
    assert config["GitHubOAuthenticator"]["oauth_callback_url"] == (
        "https://${var.jupyterhub_hostname}/hub/oauth_callback"
    )


def test_images_are_pulled_continuously_not_by_an_install_hook(synth, upstream):
    values = hub_values(synth)
    assert values["prePuller"]["hook"] == {"enabled": False}
    assert values["prePuller"]["continuous"] == {"enabled": True}
    assert values["singleuser"]["startTimeout"] == 1800
    validate_values(
        values, upstream / "jupyterhub" / "values.schema.yaml", upstream / "jupyterhub" / "values.yaml"
    )


def test_user_pods_can_be_required_on_user_nodes(synth):
    values = hub_values(synth, user_node_purpose="require", cpu_on_gpu_nodes=True)
    assert values["scheduling"]["userPods"]["nodeAffinity"] == {"matchNodePurpose": "require"}
    gpu = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    assert values["singleuser"]["extraTolerations"] == [gpu]
    assert values["prePuller"]["extraTolerations"] == []
    with pytest.raises(ConfigError, match=r"'user_node_purpose' is 'always': use one of ignore, prefer"):
        hub_values(synth, user_node_purpose="always")


def test_cpu_profiles_see_no_gpu_whatever_the_default_runtime():
    """A profile without a GPU request hides the node's GPUs from NGC images (which set
    NVIDIA_VISIBLE_DEVICES=all): the device plugin is bypassed if nvidia is containerd's default."""
    import json

    import cdktf

    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    (hub,) = [r for r in resources(stack, "helm_release").values() if r["chart"] == "jupyterhub"]
    profiles = release_values(hub)["singleuser"]["profileList"]
    assert profiles
    for profile in profiles:
        override = profile.get("kubespawner_override", {})
        if "nvidia.com/gpu" not in override.get("extra_resource_limits", {}):
            assert override["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void", profile["slug"]
        else:
            assert "NVIDIA_VISIBLE_DEVICES" not in override.get("environment", {}), profile["slug"]


def admin_step(synthesized) -> tuple[str, dict]:
    (address,) = [
        f"terraform_data.{name}"
        for name in resources(synthesized, "terraform_data")
        if "admin-password" in name
    ]
    return address, synthesized["resource"]["terraform_data"][address.split(".", 1)[1]]


def test_the_native_admin_password_reaches_the_hub_through_a_secret_only(synth):
    """The password goes into ADMIN_SECRET from the server (kube-secret.sh, an uploaded secrets
    file), before the hub is installed; the release's values carry only the Secret's name."""
    fields = {
        "cluster": make_cluster(gpu_capacity=8),
        "host": "jupyter.example.com",
        "home_storage_class": "nfs-client",
        "scratch_storage_class": "fast-scratch",
        "gpu_profiles": (0, 1),
        "auth": NATIVE,
        "secret_host": SERVER,
    }
    synthesized = synth(lambda stack: JupyterHub(stack, "hub", props=JupyterHubProps(**fields)))
    (release,) = resources(synthesized, "helm_release").values()
    address, step = admin_step(synthesized)
    assert address in release["depends_on"]
    reference = "${var.jupyterhub_admin_password}"
    uploads = [p["file"] for p in step["provisioner"] if "file" in p]
    assert {
        "content": f"{ADMIN_SECRET_KEY}={reference}\n",
        "destination": f".gpu-constructs/kube-secret.jupyterhub.{ADMIN_SECRET}.env",
    } in [{k: u[k] for k in ("content", "destination")} for u in uploads]
    (command,) = [c for p in step["provisioner"] if "remote-exec" in p for c in p["remote-exec"]["inline"]][
        -1:
    ]
    assert f"SECRET_NAME='{ADMIN_SECRET}'" in command and "NAMESPACE='jupyterhub'" in command
    assert "kube-secret.sh" in command and reference not in command
    assert (
        step["triggers_replace"][f"{ADMIN_SECRET_KEY}_sha256"] == "${sha256(var.jupyterhub_admin_password)}"
    )
    assert reference not in json.dumps(step["triggers_replace"])
    assert reference not in json.dumps(release)
    hub = release_values(release)["hub"]
    assert hub["extraConfig"] == {"gpu-constructs-native-admin": SEED_NATIVE_ADMIN}
    assert hub["extraEnv"] == {
        ADMIN_PASSWORD_ENV: {"valueFrom": {"secretKeyRef": {"name": ADMIN_SECRET, "key": ADMIN_SECRET_KEY}}}
    }
    with pytest.raises(ConfigError, match=r"'secret_host' is None: native auth creates the admin account"):
        JupyterHubProps(**{**fields, "secret_host": None})


def stand_in_native_authenticator(monkeypatch) -> type:
    """NativeAuthenticator 1.3.0's surface the seed uses (nativeauthenticator.py __init__ and the
    authenticator's admin_users, normalize_username, db and log; orm.py UserInfo.find and its
    columns), and bcrypt's hashpw/gensalt, as modules the seed imports."""
    import logging

    class UserInfo:
        def __init__(self, **columns):
            self.__dict__.update(columns)

        @classmethod
        def find(cls, db, username):
            return next((row for row in db.rows if row.username == username), None)

    class NativeAuthenticator:
        def __init__(self, add_new_table=True, *args, db=None, admin_users=(), **kwargs):
            self.db, self.admin_users, self.log = db, set(admin_users), logging.getLogger("hub")

        def normalize_username(self, name):
            return name.lower()

    package = types.ModuleType("nativeauthenticator")
    package.NativeAuthenticator = NativeAuthenticator
    orm = types.ModuleType("nativeauthenticator.orm")
    orm.UserInfo = UserInfo
    bcrypt = types.ModuleType("bcrypt")
    bcrypt.gensalt = lambda: b"$2b$12$salt"
    bcrypt.hashpw = lambda password, salt: salt + b":" + password
    for name, module in (
        ("nativeauthenticator", package),
        ("nativeauthenticator.orm", orm),
        ("bcrypt", bcrypt),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    return UserInfo


class StandInDb:
    def __init__(self, rows=()):
        self.rows, self.commits = list(rows), 0

    def add(self, row):
        self.rows.append(row)

    def commit(self):
        self.commits += 1


def test_the_seed_creates_the_admin_account_before_anyone_can_sign_up(monkeypatch):
    """Run the hub.extraConfig snippet as z2jh does (exec with ``c``): the authenticator class it
    installs creates the admin's row, approved, with the password from the Secret's env var, when
    the hub creates its authenticator (before it listens); create_user then refuses the name
    (nativeauthenticator.py: ``if self.user_exists(username) ...: return``). An existing account
    is left as it is, and no password means no hub."""
    user_info = stand_in_native_authenticator(monkeypatch)
    config = types.SimpleNamespace(JupyterHub=types.SimpleNamespace())
    exec(SEED_NATIVE_ADMIN, {"c": config})
    seeded = config.JupyterHub.authenticator_class
    assert issubclass(seeded, sys.modules["nativeauthenticator"].NativeAuthenticator)

    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "Zx8!long-enough-password")
    db = StandInDb()
    seeded(db=db, admin_users={"Ops-Lead"})
    (row,) = db.rows
    assert (row.username, row.is_authorized) == ("ops-lead", True)
    assert row.password == b"$2b$12$salt:Zx8!long-enough-password" and db.commits == 1
    seeded(db=db, admin_users={"ops-lead"})  # a restart
    assert db.rows == [row]
    claimed = user_info(username="ops-lead", password=b"theirs", is_authorized=True)
    db = StandInDb([claimed])
    seeded(db=db, admin_users={"ops-lead"})
    assert db.rows == [claimed] and claimed.password == b"theirs"

    monkeypatch.delenv(ADMIN_PASSWORD_ENV)
    with pytest.raises(ValueError, match=f"{ADMIN_PASSWORD_ENV} is empty"):
        seeded(db=StandInDb(), admin_users={"ops-lead"})


def proxmox_stack(**overrides) -> dict:
    import cdktf

    from tests.conftest import site_instance

    instance = site_instance("proxmox-ha", "proxmox-ha", overrides)
    return json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))


def test_proxmox_ha_has_no_default_admin_name():
    """The admin's name is a variable without a default, its password a sensitive one: nothing in
    the code names the account that approves every sign-up."""
    stack = proxmox_stack()
    user, password = (
        stack["variable"]["jupyterhub_admin_user"],
        stack["variable"]["jupyterhub_admin_password"],
    )
    assert "default" not in user and "default" not in password and password["sensitive"] is True
    (hub,) = [r for r in resources(stack, "helm_release").values() if r["chart"] == "jupyterhub"]
    assert release_values(hub)["hub"]["config"]["Authenticator"]["admin_users"] == [
        "${var.jupyterhub_admin_user}"
    ]
    _, step = admin_step(stack)
    assert step["connection"]["host"] == "10.0.0.11"
    with pytest.raises(
        ConfigError, match=r"'jupyter_admin_users' is \('admin',\): with jupyter_auth='native'"
    ):
        proxmox_stack(jupyter_admin_users=("admin",))
    github = proxmox_stack(jupyter_auth="github", jupyter_github_organizations=("acme",))
    assert "jupyterhub_admin_password" not in github["variable"]
    (hub,) = [r for r in resources(github, "helm_release").values() if r["chart"] == "jupyterhub"]
    assert "extraConfig" not in release_values(hub)["hub"]


def test_the_rendered_hub_seeds_its_admin_from_the_secret(helm, upstream):
    """Rendered by Helm from the chart: the hub container reads the password from ADMIN_SECRET
    (not optional: without it the hub does not start), and the hub's config Secret carries the
    seed."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    rendered = render.rendered(instance)
    objects = [obj for release, obj in rendered.objects() if release.chart == "jupyterhub"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "hub"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "hub"]
    (env,) = [e for e in container["env"] if e["name"] == ADMIN_PASSWORD_ENV]
    assert env["valueFrom"] == {"secretKeyRef": {"name": ADMIN_SECRET, "key": ADMIN_SECRET_KEY}}
    (secret,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "hub"]
    values = yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))
    assert values["hub"]["extraConfig"]["gpu-constructs-native-admin"] == SEED_NATIVE_ADMIN
    assert (
        values["hub"]["config"]["JupyterHub"]["authenticator_class"]
        == "nativeauthenticator.NativeAuthenticator"
    )
    assert values["hub"]["config"]["Authenticator"]["admin_users"] != ["admin"]


def test_sqlite_databases_never_sit_on_nfs(helm, upstream):
    """The hub's SQLite database (hub.db.type sqlite-pvc, the chart's default) must not be on an NFS
    class: JupyterHub's docs, "The Hub's Database": SQLite "should not be used on NFS". Every
    rendered hub-db-dir claim of every stack, against the StorageClasses the stack renders."""
    import main
    from tests.support import render

    checked = 0
    for instance in main.INSTANCES:
        rendered = render.rendered(instance)
        objects = [obj for _, obj in rendered.objects()]
        nfs = {
            o["metadata"]["name"]
            for o in objects
            if o["kind"] == "StorageClass" and "nfs" in o.get("provisioner", "")
        }
        nfs |= (
            {"nfs-client"}
            if any(r.chart == "nfs-subdir-external-provisioner" for r in rendered.releases)
            else set()
        )
        defaults = {
            o["metadata"]["name"]
            for o in objects
            if o["kind"] == "StorageClass"
            and (o["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
            == "true"
        }
        for claim in (
            o
            for o in objects
            if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "hub-db-dir"
        ):
            checked += 1
            klass = claim["spec"].get("storageClassName") or next(iter(defaults), None)
            assert klass not in nfs, f"{instance.stack}: hub-db-dir on {klass}"
    assert checked == 1  # proxmox-ha's hub


def test_the_hub_database_claim_is_kept_by_helm_uninstall(synth):
    """hub.db.pvc.annotations carries helm.sh/resource-policy: keep with or without a class of its
    own; the storage class is set only when given (None: the cluster's default)."""
    assert hub_values(synth)["hub"]["db"]["pvc"] == {"annotations": {"helm.sh/resource-policy": "keep"}}
    pvc = hub_values(synth, hub_db_storage_class="server-local")["hub"]["db"]["pvc"]
    assert pvc == {"annotations": {"helm.sh/resource-policy": "keep"}, "storageClassName": "server-local"}


def test_every_rendered_hub_database_claim_is_kept(helm, upstream):
    """Rendered by Helm from z2jh 4.4.0 (templates/hub/pvc.yaml): every stack's hub-db-dir claim
    carries the annotation Helm's uninstall reads (pkg/action/resource_policy.go: the value, trimmed
    and lower-cased, equals "keep"), so a `helm uninstall` or a replaced release leaves it."""
    import main
    from tests.support import render

    claims = [
        (instance.stack, obj)
        for instance in main.INSTANCES
        for release, obj in render.rendered(instance).objects()
        if release.chart == "jupyterhub"
        and obj["kind"] == "PersistentVolumeClaim"
        and obj["metadata"]["name"] == "hub-db-dir"
    ]
    assert [stack for stack, _ in claims] == ["proxmox-ha"]
    for stack, claim in claims:
        policy = (claim["metadata"].get("annotations") or {}).get("helm.sh/resource-policy", "")
        assert policy.strip().lower() == "keep", f"{stack}: hub-db-dir is deleted by helm uninstall"
