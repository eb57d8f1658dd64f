"""How results read, the same in every table: a mean ± its std, a change ± its interval, and
the line that says which code made them."""

from __future__ import annotations

import math
from collections.abc import Iterable


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_std(mean, std, n: int | None) -> str:
    """``84.94 ± 0.31``; the std only over more than one seed; empty without a mean."""
    if _missing(mean):
        return ""
    return f"{mean:.2f}" + ("" if not n or n < 2 or _missing(std) else f" ± {std:.2f}")


def change(delta, half_width) -> str:
    """``+0.52 ± 0.40``: a change and its interval's half-width; empty without a change."""
    if _missing(delta):
        return ""
    return f"{delta:+.2f}" + ("" if _missing(half_width) else f" ± {half_width:.2f}")


def made_by(runs: Iterable[dict]) -> str:
    """``commit abc1234, torch 2.14.1``: what made the completed runs (each pair once)."""
    made = sorted({f"commit {r.get('commit') or 'unknown'}, torch {r.get('torch')}"
                   for r in runs if r.get("status") == "completed"})
    return "; ".join(made) or "no completed run"
