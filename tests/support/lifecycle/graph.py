"""The Terraform dependency graph of a synthesized stack, as Terraform 1.11 builds it.

An edge A -> B means A is applied after B: B is in A's ``depends_on`` or an expression of A
references B (terraform ``internal/terraform`` ``ReferenceTransformer``); Terraform stores these
in A's state as its dependencies. On destroy every such edge is reversed (``DestroyEdgeTransformer``
in ``internal/terraform/transform_destroy_edge.go``, from the stored ``StateDependencies``): A is
destroyed before B iff A depends on B, transitively; a resource nothing depends on may go first.
A resource also depends on what its provider's configuration references: in a full destroy "any
provider dependencies must wait until all that provider's resources have first been destroyed"
(the comment on ``tryInterProviderDestroyEdge``, same file), so a helm_release is destroyed before
the EKS or LKE cluster its provider connects to.
"""

from __future__ import annotations

import re
from typing import Any

_REFERENCE = re.compile(r"\b([a-z][a-z0-9_]*)\.([A-Za-z0-9_-]+)")


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, at any depth."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def references(synthesized: dict[str, Any], body: Any) -> set[str]:
    """The resource addresses that the Terraform expressions in ``body``'s strings reference."""
    resources = synthesized.get("resource", {})
    found = set()
    for text in strings(body):
        if "${" in text.replace("$${", ""):
            for kind, logical_id in _REFERENCE.findall(text):
                if logical_id in resources.get(kind, {}):
                    found.add(f"{kind}.{logical_id}")
    return found


def edges(synthesized: dict[str, Any]) -> dict[str, set[str]]:
    """Each resource address -> the addresses it depends on (depends_on, references, its provider)."""
    providers = {
        name: references(synthesized, configs)
        for name, configs in (synthesized.get("provider") or {}).items()
    }
    found: dict[str, set[str]] = {}
    for kind, resources in synthesized.get("resource", {}).items():
        provider = kind.split("_", 1)[0]
        for logical_id, body in resources.items():
            address = f"{kind}.{logical_id}"
            needed = set(body.get("depends_on") or []) | references(synthesized, body)
            needed |= providers.get(body.get("provider", provider).split(".")[0], set())
            found[address] = needed - {address}
    return found


def dependencies(synthesized: dict[str, Any], address: str) -> set[str]:
    """Everything ``address`` is applied after (so destroyed before), transitively."""
    graph = edges(synthesized)
    seen: set[str] = set()
    todo = [address]
    while todo:
        for needed in graph.get(todo.pop(), ()):
            if needed not in seen:
                seen.add(needed)
                todo.append(needed)
    return seen


def depends_on(synthesized: dict[str, Any], address: str, target: str) -> bool:
    """Whether ``address`` is applied after ``target``, through any chain of dependencies."""
    return target in dependencies(synthesized, address)


def find_cycle(synthesized: dict[str, Any]) -> list[str] | None:
    """A dependency cycle (its addresses, the first repeated at the end), or None: Terraform refuses
    a graph with one at validate and plan ("Error: Cycle: ...", ``dag.AcyclicGraph.Validate``)."""
    graph = edges(synthesized)
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(address: str) -> list[str] | None:
        state[address] = 1
        path.append(address)
        for needed in sorted(graph.get(address, ())):
            if state.get(needed) == 1:
                return [*path[path.index(needed) :], needed]
            if needed not in state and (found := visit(needed)):
                return found
        state[address] = 2
        path.pop()
        return None

    for address in sorted(graph):
        if address not in state and (found := visit(address)):
            return found
    return None


def stand_in(synthesized: dict[str, Any]) -> dict[str, Any]:
    """The stack's graph as Terraform configuration that needs no provider: each resource a
    ``terraform_data`` (built into Terraform) whose depends_on holds the stand-ins of everything
    the resource depends on, so the real ``terraform validate`` judges the graph."""

    def name(address: str) -> str:
        return address.replace(".", "__")

    return {
        "resource": {
            "terraform_data": {
                name(address): {"depends_on": sorted(f"terraform_data.{name(n)}" for n in needed)}
                for address, needed in sorted(edges(synthesized).items())
            }
        }
    }
