"""What names a run: the one place that says which config keys make two runs different.

A run directory is ``<step>[,<variant>]/seed<N>``, where the variant lists the command-line
overrides that change what is computed (``epochs=1,model.kernel_size=9``). The Hydra config
(through the ``roadmap.run_subdir`` resolver), resume (which refuses a checkpoint whose config
differs) and :mod:`roadmap.results.collect` (which files runs under their variant) all use the
functions here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

VOLATILE_KEYS = ("progress", "device", "workers", "augment_batches", "logger",
                 "checkpoint_every")
"""Keys that say how a run runs, not what it computes: they may change when it resumes.
``workers`` and ``augment_batches`` (how many loader processes, how many batches one call
augments) change which random numbers an image draws but not what is drawn from, like the
device. (``eval_batch_size`` is not one: it changes the evaluation's float sums in their last
bits.)"""

OUTSIDE_THE_VARIANT = ("step", "seed", "preset", "ladder", *VOLATILE_KEYS)
"""Keys never in the variant: the step and seed have their own parts of the path, the preset
and ladder name the sweep directory, and the volatile keys name nothing."""

HYDRA_PREFIXES = ("hydra.", "hydra/")


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def names_the_run(key: str) -> bool:
    """Whether an override of ``key`` makes a run a variant of its step."""
    key = key.lstrip("+~")
    if key.startswith(HYDRA_PREFIXES):
        return False
    return not any(key == k or key.startswith(k + ".") for k in OUTSIDE_THE_VARIANT)


def variant(overrides: Iterable[str]) -> str:
    """The overrides (``key=value`` strings) that name a run, sorted and comma-joined."""
    return ",".join(sorted(str(o) for o in overrides if names_the_run(_key(str(o)))))


def run_subdir(step: str, seed: Any, overrides: Iterable[str]) -> str:
    """``<step>[,<variant>]/seed<N>``: a run's directory below its sweep (or preset) folder."""
    name = variant(overrides)
    return f"{step}{',' + name if name else ''}/seed{seed}"


def comparable(values: Mapping) -> dict:
    """A run's resolved config (a plain dict) minus what may change when it resumes."""
    return {k: v for k, v in values.items() if k not in VOLATILE_KEYS}


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]
