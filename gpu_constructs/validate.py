"""Checks for typed settings. Each raises ConfigError naming the field, the value and the fix."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cdktf import Token

from gpu_constructs.errors import ConfigError

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
        raise ConfigError(field, value, f"use one of {', '.join(options)}")
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
