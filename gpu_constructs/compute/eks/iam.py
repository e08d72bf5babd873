"""IAM policy documents as deterministic JSON (sorted keys), for the AWS constructs.

The controllers' permission policies are data: ``policies/<name>.json``, each in IAM's own format
with ``{{placeholders}}`` for what the stack decides (cluster name, region, account, the ARNs of
resources it creates), so each reads and diffs as the policy AWS evaluates, against its upstream
source (Karpenter's getting-started CloudFormation, the load balancer controller's
``docs/install/iam_policy.json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

POLICIES = Path(__file__).resolve().parent / "policies"
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


def policy_document(*statements: Mapping[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def policy_file(name: str, **values: str) -> str:
    """The document of ``policies/<name>.json`` with every ``{{key}}`` (in keys and values) replaced
    by ``values[key]``; a placeholder without a value, or a value without a placeholder, is an error."""
    document = json.loads((POLICIES / f"{name}.json").read_text(encoding="utf-8"))
    if document.get("Version") != "2012-10-17":
        raise ValueError(f"policies/{name}.json: Version must be 2012-10-17")
    used: set[str] = set()

    def fill(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise ValueError(f"policies/{name}.json: no value for {{{{{key}}}}}")
            used.add(key)
            return values[key]

        return _PLACEHOLDER.sub(value, text)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {fill(key): walk(item) for key, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return fill(node) if isinstance(node, str) else node

    statements = walk(document["Statement"])
    if unused := sorted(set(values) - used):
        raise ValueError(f"policies/{name}.json has no placeholder for {', '.join(unused)}")
    return policy_document(*statements)


def service_trust(service: str, *actions: str) -> str:
    """A role trust policy for an AWS service principal (``sts:AssumeRole`` unless ``actions`` say more)."""
    return policy_document(
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": list(actions or ["sts:AssumeRole"])}
    )
