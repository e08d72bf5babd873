"""No lost structs in any stack of main.py.

jsii converts a plain dict to a struct only where the struct stands alone (``vpc_config={...}``). In a
list (``route=[{...}]``, ``block_device_mappings=[{...}]``) the dict is passed on as a map with its
snake_case keys, and the generated ``*_to_terraform`` reads the camelCase ones: every key with an
underscore is dropped without a word. Two checks catch the class: what the constructors are given
(a plain dict where the bindings expect a struct), and what comes out (a block or list element whose
attributes are all null or empty).
"""

from __future__ import annotations

import collections.abc
import functools
import json
import typing
from collections.abc import Iterator
from typing import Any

import cdktf
import jsii
import pytest

from main import INSTANCES


def _is_struct_class(candidate: Any) -> bool:
    return isinstance(candidate, type) and hasattr(candidate, "__jsii_name_mapping__")


def _names_a_struct(hint: Any) -> bool:
    return _is_struct_class(hint) or any(_names_a_struct(a) for a in typing.get_args(hint))


def _expects_struct_elements(hint: Any) -> bool:
    """Whether a field's type hint is (a union with) a sequence of jsii structs."""
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
        return _names_a_struct(hint)
    return any(_expects_struct_elements(a) for a in typing.get_args(hint))


@functools.cache
def _hints(struct_class: type) -> dict[str, Any]:
    return typing.get_type_hints(struct_class.__init__)


def lost_structs(value: Any, where: str) -> Iterator[str]:
    """Paths of plain dicts given where a jsii struct is expected, inside ``value``."""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from lost_structs(item, f"{where}[{index}]")
    elif _is_struct_class(type(value)):
        hints = _hints(type(value))
        for name, field_value in value._values.items():
            path = f"{where}.{name}"
            if isinstance(field_value, (list, tuple)) and _expects_struct_elements(hints.get(name)):
                for index, item in enumerate(field_value):
                    if isinstance(item, dict):
                        yield f"{path}[{index}] ({type(value).__name__})"
            yield from lost_structs(field_value, path)


def empty_blocks(node: Any, where: str = "") -> Iterator[str]:
    """Blocks and list elements of synthesized JSON whose every attribute is null or empty."""

    def empty(value: Any) -> bool:
        return value is None or value in ({}, [], "")

    if isinstance(node, dict):
        if node and all(empty(v) for v in node.values()):
            yield where
        for key, value in node.items():
            yield from empty_blocks(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if value == {}:
                yield f"{where}[{index}]"
            yield from empty_blocks(value, f"{where}[{index}]")


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Every stack of main.py, built with jsii.create watched: (lost structs, synthesized JSON)."""
    lost: dict[str, list[str]] = {}
    synthesized: dict[str, dict[str, Any]] = {}
    original = jsii.create
    current: list[str] = []

    def watched(cls: Any, obj: Any, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        for index, arg in enumerate(args or []):
            found = list(lost_structs(arg, f"{cls.__name__}(arg {index})"))
            if found:
                path = args[1] if len(args) > 1 and isinstance(args[1], str) else "?"
                lost.setdefault(current[-1], []).extend(f"{path}: {f}" for f in found)
        return original(cls, obj, args, *rest, **kwargs)

    jsii.create = watched
    try:
        for instance in INSTANCES:
            current.append(instance.stack)
            stack = instance.build(cdktf.Testing.app())
            synthesized[instance.stack] = json.loads(cdktf.Testing.synth(stack))
    finally:
        jsii.create = original
    return lost, synthesized


def test_every_stack_of_main_is_checked(built):
    assert set(built[1]) == {i.stack for i in INSTANCES} and len(INSTANCES) >= 5


def test_no_plain_dict_where_jsii_expects_a_struct(built):
    lost, _ = built
    assert lost == {}


@pytest.mark.parametrize("stack", [i.stack for i in INSTANCES])
def test_no_block_synthesizes_to_nulls(built, stack):
    synthesized = built[1][stack]
    found = list(empty_blocks(synthesized.get("resource", {}), "resource"))
    found += list(empty_blocks(synthesized.get("provider", {}), "provider"))
    assert found == []


def test_the_checks_see_a_lost_struct():
    from cdktf_cdktf_provider_aws.route_table import RouteTableConfig, RouteTableRoute

    lost = RouteTableConfig(vpc_id="v", route=[{"cidr_block": "0.0.0.0/0"}])
    typed = RouteTableConfig(vpc_id="v", route=[RouteTableRoute(cidr_block="0.0.0.0/0")])
    assert list(lost_structs(lost, "t")) == ["t.route[0] (RouteTableConfig)"]
    assert list(lost_structs(typed, "t")) == []
    assert list(empty_blocks({"route": [{"cidr_block": None, "gateway_id": None}]})) == [".route[0]"]


def test_the_policy_aspect_refuses_a_block_that_synthesized_to_nulls():
    from cdktf import Aspects, TerraformStack, Testing
    from cdktf_cdktf_provider_aws.provider import AwsProvider
    from cdktf_cdktf_provider_aws.route_table import RouteTable

    from gpu_constructs.policy import StackPolicy

    stack = TerraformStack(Testing.app(), "lost")
    AwsProvider(stack, "aws", region="eu-west-1")
    RouteTable(stack, "routes", vpc_id="vpc-1", route=[{"cidr_block": "0.0.0.0/0", "gateway_id": "igw-1"}])
    Aspects.of(stack).add(StackPolicy(None))
    # The aspect's PolicyError reaches Python through jsii as a RuntimeError.
    with pytest.raises(
        RuntimeError, match=r"lost/routes: route\[0\] synthesized to nulls: pass the typed struct"
    ):
        Testing.synth(stack)
