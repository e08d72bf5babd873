"""What a destroy-time provisioner may reference, as Terraform 1.11 checks it.

A provisioner with ``when = destroy`` runs from the state alone: its arguments and its connection
are evaluated in the scope of the resource instance only (``evalDestroyProvisionerConfig`` in
internal/terraform/node_resource_abstract_instance.go, "during destroy a provisioner can only
evaluate within the scope of the parent resource"), and the configuration loader refuses any other
reference: ``onlySelfRefs`` in internal/configs/provisioner.go accepts the roots ``self``, ``path``
and ``terraform``, ``count.index`` and ``each.key`` ("Invalid reference from destroy provisioner").
For a destroy-time provisioner the resource's own ``connection`` block is evaluated in the same scope
(``applyProvisioners``, baseConn), so its references count too. Values the step needs at destroy are
kept in the resource (``input``, ``triggers_replace``) and read as ``self.<attribute>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.support.lifecycle.graph import strings

ALLOWED_ROOTS = ("self", "path", "terraform")
ALLOWED_PAIRS = ("count.index", "each.key")
# The interpolations of a Terraform JSON string: "${...}" (one level of nested braces, for object
# literals), not the escaped "$${".
_INTERPOLATION = re.compile(r"(?<!\$)\$\{((?:[^{}]|\{[^{}]*\})*)\}")
# A traversal: its root and, when there is one, its first attribute (`var.x`, `each.value`, `self`).
_TRAVERSAL = re.compile(r"(?<![\w.])([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_FOR_BINDING = re.compile(r"\bfor\s+([A-Za-z_]\w*)(?:\s*,\s*([A-Za-z_]\w*))?\s+in\b")
_KEYWORDS = {"for", "in", "if", "true", "false", "null"}


@dataclass(frozen=True)
class Finding:
    address: str
    where: str
    """``provisioner[<i>].<type>`` or ``connection`` (the resource's own)."""
    reference: str


def references(value: Any) -> set[str]:
    """Each reference in ``value``'s interpolations, as ``root`` or ``root.attribute``: not the
    functions called, the keywords, nor the names a ``for`` expression binds."""
    found: set[str] = set()
    for text in strings(value):
        for expression in _INTERPOLATION.findall(text):
            code = _STRING_LITERAL.sub('""', expression)
            bound = {name for pair in _FOR_BINDING.findall(code) for name in pair if name}
            for match in _TRAVERSAL.finditer(code):
                root, attribute = match.group(1), match.group(2)
                if root in _KEYWORDS or root in bound or code[match.end() : match.end() + 1] == "(":
                    continue
                found.add(f"{root}.{attribute}" if attribute else root)
    return found


def allowed(reference: str) -> bool:
    return reference.split(".", 1)[0] in ALLOWED_ROOTS or reference in ALLOWED_PAIRS


def findings(synthesized: dict[str, Any]) -> list[Finding]:
    """Every reference a destroy-time provisioner (or the connection it uses) may not make."""
    found: list[Finding] = []
    for kind, resources in (synthesized.get("resource") or {}).items():
        for logical_id, body in resources.items():
            address = f"{kind}.{logical_id}"
            destroy_time = [
                (index, provisioner_type, config)
                for index, provisioner in enumerate(body.get("provisioner") or [])
                for provisioner_type, config in provisioner.items()
                if config.get("when") == "destroy"
            ]
            if not destroy_time:
                continue
            parts = [(f"provisioner[{i}].{t}", config) for i, t, config in destroy_time]
            if body.get("connection"):
                parts.append(("connection", body["connection"]))
            for where, part in parts:
                found.extend(
                    Finding(address, where, reference)
                    for reference in sorted(references(part))
                    if not allowed(reference)
                )
    return found


def destroy_time_steps(synthesized: dict[str, Any]) -> list[str]:
    """The addresses of the resources with a destroy-time provisioner."""
    return sorted(
        f"{kind}.{logical_id}"
        for kind, resources in (synthesized.get("resource") or {}).items()
        for logical_id, body in resources.items()
        if any(
            config.get("when") == "destroy" for p in body.get("provisioner") or [] for config in p.values()
        )
    )
