"""The one error type for bad settings: it names the field, the value and the fix."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work, caught at synth before anything is deployed."""

    def __init__(self, field: str, value: Any, fix: str) -> None:
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(f"{field!r} is {value!r}: {fix}")
