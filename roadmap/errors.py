"""The error a run, a sweep or a tool reports to its user as one line, and how any exception
becomes that line."""

from __future__ import annotations

from typing import Any


class RunError(RuntimeError):
    """A run cannot start or go on; the message says why and how to fix it."""


def shown(value: Any) -> str:
    """A value as the user types it: ``0`` not ``0.0``, ``true`` not ``True``, ``[3,4]`` not
    ``(3, 4)``, ``group`` not ``'group'``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    return str(value)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), at most ``limit``
    characters: what a one-line report quotes of an error from elsewhere."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
