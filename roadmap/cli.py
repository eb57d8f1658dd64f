"""Command lines of the non-Hydra entry points (``describe``, ``bench``): ``key=value`` words,
some the tool's own, the rest Hydra overrides; errors as one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def parse_key_values(argv: Sequence[str], own: Mapping[str, str],
                     example: str) -> tuple[dict[str, str], list[str]]:
    """Split ``argv`` into the tool's own keys (``own`` gives their defaults) and Hydra
    overrides. Every word must be ``key=value``; ``example`` shows one in the error."""
    values, overrides = dict(own), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"argument {arg!r} is not key=value, e.g. {example}")
        if key in values:
            values[key] = value
        else:
            overrides.append(arg)
    return values, overrides


def positive_int(values: Mapping[str, str], key: str, minimum: int = 1) -> int:
    """``values[key]`` as an integer >= ``minimum``, or a ValueError naming the key."""
    text = values[key]
    if not text.isdigit() or int(text) < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{key}={text} is invalid: must be {wanted}")
    return int(text)


def one_line(exc: BaseException) -> str:
    """An exception (Hydra's are multi-line, with the reason in the cause) as one line."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    text = " ".join(ln for ln in lines if ln)
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).splitlines()[0].strip()})"
    return text
