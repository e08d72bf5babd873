"""Checks for typed settings. Each raises ConfigError naming the field, the value and the fix."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import types
import typing
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from cdktf import Token

from gpu_constructs.errors import ConfigError, did_you_mean

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_K8S_NAME = re.compile(rf"^{_DNS_LABEL}$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CRON = re.compile(r"^(\S+\s+){4}\S+$")


def is_reference(value: str) -> bool:
    """Whether ``value`` is a Terraform reference (a cdktf token or a ``${...}`` expression), whose
    value is only known at plan time: such values are checked by Terraform, not here."""
    # cdktf encodes a list token as one "#{TfToken[...]}" element.
    return Token.is_unresolved(value) or value.startswith(("${", "#{TfToken["))


def ipv4(field: str, value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(field, value, "give an IPv4 address such as 192.168.1.100") from None
    return value


def cidr(field: str, value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as error:
        raise ConfigError(
            field, value, f"give an IPv4 network in CIDR form such as 10.42.0.0/16 ({error})"
        ) from None


def dns_name(field: str, value: str) -> str:
    if len(value) > 253 or not _DNS_NAME.match(value):
        raise ConfigError(field, value, "give a lower-case DNS name such as api.example.com")
    return value


def k8s_name(field: str, value: str) -> str:
    if not _K8S_NAME.match(value):
        raise ConfigError(
            field, value, "use a lower-case DNS label: letters, digits and '-', at most 63 characters"
        )
    return value


def quantity(field: str, value: str) -> str:
    if not _QUANTITY.match(value):
        raise ConfigError(field, value, "give a Kubernetes quantity such as 500m, 4, 8Gi or 100Gi")
    return value


_STORAGE_SIZE = re.compile(r"^([0-9]+(\.[0-9]+)?)(Mi|Gi|Ti)$")


def storage_size(field: str, value: str) -> str:
    """A volume size above zero in Mi, Gi or Ti, such as ``20Gi``."""
    match = _STORAGE_SIZE.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(field, value, "give a size above zero in Mi, Gi or Ti, e.g. 20Gi")
    return value


_DURATION = re.compile(r"^([0-9]+[smhdwy])+$")


def duration(field: str, value: str, units: str = "smhdwy") -> str:
    """A Prometheus duration such as ``15d`` or ``1w2d`` with units from ``units``."""
    if not _DURATION.fullmatch(value) or any(c.isalpha() and c not in units for c in value):
        raise ConfigError(field, value, f"give a duration such as 15d or 12h (units: {', '.join(units)})")
    if all(c == "0" or c.isalpha() for c in value):
        raise ConfigError(field, value, "give a duration above zero, such as 15d")
    return value


def email(field: str, value: str) -> str:
    if not _EMAIL.match(value):
        raise ConfigError(field, value, "give an e-mail address such as ops@example.com")
    return value


# minute, hour, day of month, month, day of week: the ranges of Kubernetes CronJob and of k3s'
# etcd-snapshot-schedule-cron (both parse with robfig/cron's standard five-field parser)
_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_CRON_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
_CRON_ITEM = re.compile(r"^(\*|\w+(?:-\w+)?)(?:/(\d+))?$")


def _cron_number(text: str, name: str, low: int) -> int | None:
    if text.isdigit():
        return int(text)
    names = _CRON_NAMES.get(name, [])
    return names.index(text.lower()) + low if text.lower() in names else None


def cron(field: str, value: str) -> str:
    example = "give a five-field cron schedule such as '0 2 * * *'"
    if not _CRON.match(value):
        raise ConfigError(field, value, example)
    for text, (name, low, high) in zip(value.split(), _CRON_FIELDS, strict=True):
        for item in text.split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                raise ConfigError(field, value, f"{name} {item!r} is not a value, range or step; {example}")
            span, step = match.groups()
            parts = [] if span == "*" else [_cron_number(part, name, low) for part in span.split("-")]
            bounds = [b for b in parts if b is not None and low <= b <= high]
            if len(bounds) != len(parts):
                raise ConfigError(field, value, f"{name} {item!r} is outside {low}-{high}; {example}")
            if bounds != sorted(bounds):
                raise ConfigError(field, value, f"{name} range {item!r} runs backwards; {example}")
            if step is not None and int(step) < 1:
                raise ConfigError(field, value, f"{name} step {item!r} must be at least 1; {example}")
    return value


def int_range(field: str, value: int, low: int, high: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, value, "give a whole number")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"from {low} to {high}"
        raise ConfigError(field, value, f"use {bounds}{'; ' + why if why else ''}")
    return value


def one_of(field: str, value: str, allowed: Iterable[str]) -> str:
    options = tuple(allowed)
    if value not in options:
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        raise ConfigError(field, value, f"{hint}use one of {', '.join(options)}")
    return value


def version(field: str, value: str, pattern: str, example: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ConfigError(field, value, f"give a pinned version such as {example}")
    return value


def unique(field: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(field, value, "each entry must appear once")
        seen.add(value)


def distinct_addresses(addresses: Iterable[tuple[str, str]], why: str, changed: Iterable[str] = ()) -> None:
    """Each address once: ``addresses`` are (field, address) pairs. Of two fields with one address,
    the one in ``changed`` (the settings a user set, e.g. those that differ from their defaults) is
    blamed, else the later one."""
    edited = set(changed)
    pairs = sorted(addresses, key=lambda pair: re.split(r"[.\[]", pair[0])[0] in edited)
    seen: dict[str, str] = {}
    for name, address in pairs:
        if address in seen:
            raise ConfigError(name, address, f"{seen[address]} already has this address; {why}")
        seen[address] = name


# --- Types of dataclass fields --------------------------------------------------------------------
def _describe(hint: Any) -> str:
    """A type as a user would write a value of it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "None"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple such as ({_example(args[0])},), each item {_describe(args[0])}"
        return f"a tuple ({', '.join(_describe(arg) for arg in args)})"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if hint is bool:
        return "True or False (a bool, not a string)"
    if hint is int:
        return "a whole number (an int, not a string)"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "a pathlib.Path"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return f"a {hint.__name__} ({', '.join(m.name for m in hint)})"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _example(hint: Any) -> str:
    return {str: "'a'", int: "1", bool: "True"}.get(hint, "...") if isinstance(hint, type) else "..."


def matches_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint``: bool is not int, a list is not a tuple,
    a tuple's elements are of its element types."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches_type(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(matches_type, value, args))
    if origin is typing.Literal:
        return value in args
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return isinstance(value, PurePath)
    return isinstance(value, origin or hint)


def field_types(settings: Any) -> None:
    """Check every field of the dataclass instance ``settings`` against its annotation, so that
    ``"false"`` for a bool or a list for a tuple fails at construction with the field's name."""
    hints = typing.get_type_hints(type(settings))
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if not matches_type(value, hints[item.name]):
            raise ConfigError(item.name, value, f"give {_describe(hints[item.name])}")
