"""Command lines of the non-Hydra entry points (``describe``, ``bench``): ``key=value`` words,
some the tool's own, the rest Hydra overrides."""

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
