"""The error a run, a sweep or a tool reports to its user as one line, and how any exception
becomes that line."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run cannot start or go on; the message says why and how to fix it."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), at most ``limit``
    characters: what a one-line report quotes of an error from elsewhere."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
