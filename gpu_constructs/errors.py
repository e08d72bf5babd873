"""The one error type for bad settings: it names the field, the value and the fix."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

DEBUG_ENV = "GPU_CONSTRUCTS_DEBUG"
"""Set to 1 to get the traceback of a ConfigError instead of its one line."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``did you mean 'x'? `` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


class ConfigError(ValueError):
    """A setting that cannot work, caught at synth before anything is deployed.

    ``str()`` is one line: ``<instance>: '<field>' is <value>: <fix>``, the instance (the stack
    name) once :meth:`within` has placed it."""

    def __init__(self, field: str, value: Any, fix: str, *, instance: str | None = None) -> None:
        self.field = field
        self.value = value
        self.fix = fix
        self.instance = instance
        super().__init__(str(self))

    def __str__(self) -> str:
        value = repr(self.value)
        if len(value) > 200:
            value = value[:197] + "..."
        where = f"{self.instance}: " if self.instance else ""
        return _one_line(f"{where}{self.field!r} is {value}: {self.fix}")

    def within(self, instance: str, renames: Mapping[str, str] | None = None) -> ConfigError:
        """The same error for ``instance``, with the field named as that instance's settings name it:
        ``renames`` maps a construct's props field (``driver_branch``) to the setting users type
        (``nvidia_driver_version``); a field such as ``auth.kind[0]`` is renamed by its longest
        matching prefix, and so is any such field the fix names."""
        field = self.field
        renames = renames or {}
        for prop in sorted(renames, key=len, reverse=True):
            if re.match(rf"{re.escape(prop)}($|[.\[])", field):
                field = renames[prop] + field[len(prop) :]
                break
        fix = self.fix
        for prop, setting in renames.items():
            if prop.isidentifier():  # a fix such as "or set driver_kernel_modules='proprietary'"
                fix = re.sub(rf"(?<![\w.]){re.escape(prop)}\b", setting, fix)
        error = ConfigError(field, self.value, fix, instance=instance)
        error.__cause__ = self.__cause__
        return error
