"""IAM policy documents as deterministic JSON (sorted keys), for the AWS constructs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def policy_document(*statements: Mapping[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def service_trust(service: str, *actions: str) -> str:
    """A role trust policy for an AWS service principal (``sts:AssumeRole`` unless ``actions`` say more)."""
    return policy_document(
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": list(actions or ["sts:AssumeRole"])}
    )
