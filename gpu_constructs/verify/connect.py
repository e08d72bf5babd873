"""Reaching a stack's cluster: its kubeconfig, the cloud's login, or ``KUBECONFIG``; and the one-line
errors for a cluster that cannot be reached or refuses the credentials."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from gpu_constructs.verify.expect import Expectation, app_root

REQUEST_TIMEOUT = (10, 60)
"""Seconds to connect and to read, for every API call."""


class Unreachable(Exception):
    """The cluster cannot be used; the message is one line that names the cluster and the fix."""


def _cluster(expected: Expectation) -> str:
    return f"stack {expected.stack!r} (cluster {expected.cluster.name!r})"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(app_root()))
    except ValueError:
        return str(path)


def _eks_config(name: str, region: str) -> dict[str, Any]:
    """A kubeconfig for an EKS cluster from the cloud's own login: endpoint and CA from the EKS API,
    a token from ``aws eks get-token`` on every connection (what ``aws eks update-kubeconfig`` writes)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if shutil.which("aws") is None:
        raise Unreachable(
            f"cluster {name!r} ({region}): the AWS CLI is not on PATH and tokens come from "
            "`aws eks get-token`: install the AWS CLI, or set KUBECONFIG"
        )
    try:
        described = boto3.client("eks", region_name=region).describe_cluster(name=name)["cluster"]
    except (BotoCoreError, ClientError) as error:
        raise Unreachable(
            f"cluster {name!r} ({region}): the EKS API refused to describe it ({error}): log in to the "
            "account (aws sts get-caller-identity) or set KUBECONFIG"
        ) from None
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", name, "--region", region],
        }
    }
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": described["endpoint"],
                    "certificate-authority-data": described["certificateAuthority"]["data"],
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def configure(
    expected: Expectation, kubeconfig: str | None = None, context: str | None = None
) -> tuple[client.Configuration, str]:
    """The client configuration for the stack's cluster, and where it came from (for messages).

    ``kubeconfig`` (the --kubeconfig option, else ``KUBECONFIG``) wins over what the stack writes."""
    configuration = client.Configuration()
    source = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if source:
            config.load_kube_config(config_file=source, context=context, client_configuration=configuration)
        elif expected.kubeconfig is not None:
            if not expected.kubeconfig.is_file():
                raise Unreachable(
                    f"{_cluster(expected)}: no kubeconfig at "
                    f"{_shown(expected.kubeconfig)}: deploy the stack (npx cdktf deploy {expected.stack}) "
                    "or set KUBECONFIG"
                )
            source = _shown(expected.kubeconfig)
            config.load_kube_config(
                config_file=str(expected.kubeconfig), context=context, client_configuration=configuration
            )
        else:
            assert expected.eks is not None
            name, region = expected.eks
            source = f"aws eks ({name}, {region})"
            config.load_kube_config_from_dict(
                _eks_config(name, region), context=context, client_configuration=configuration
            )
    except ConfigException as error:
        raise Unreachable(
            f"{_cluster(expected)}: kubeconfig {source} is unusable "
            f"({error}): point KUBECONFIG at a working kubeconfig"
        ) from None
    # Fail fast on a dead address instead of urllib3's three retries.
    configuration.retries = 0
    return configuration, source


def probe(api: client.ApiClient, expected: Expectation, source: str) -> str:
    """Check that the cluster answers and accepts the credentials; return its version."""
    where = f"{_cluster(expected)} at {api.configuration.host} (from {source})"
    try:
        version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
        client.CoreV1Api(api).list_node(limit=1, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as error:
        raise Unreachable(api_error(where, error)) from None
    except urllib3.exceptions.HTTPError as error:
        raise Unreachable(unreachable(where, error)) from None
    return str(version.git_version)


def unreachable(where: str, error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    text = str(reason).split(": ")[-1].strip() or type(error).__name__
    return (
        f"{where} is unreachable ({text}): check that the cluster is running and that this machine "
        "reaches its API (VPN, API allowlist), or point KUBECONFIG at it"
    )


def api_error(where: str, error: ApiException) -> str:
    if error.status == 401:
        return (
            f"{where} rejected the credentials (401 Unauthorized): refresh them (a new kubeconfig from "
            "the stack, or the cloud login) or point KUBECONFIG at valid ones"
        )
    if error.status == 403:
        return (
            f"{where} forbids this user to read the cluster (403 Forbidden): use an admin kubeconfig, "
            "verification reads nodes, pods and the platform's objects"
        )
    return f"{where} answered {error.status} {error.reason}: check the API server's health"
