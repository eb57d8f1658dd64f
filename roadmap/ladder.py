"""The two ladders of the paper, step by step, with the paper's reference numbers.

The step order and the paper's figures come from the tables in ``roadmap/paper/`` (copied from
the paper: Appendix C, Tables 10 and 11, and Table 1 for ConvNeXt-B's GFLOPs). The architecture of
each step lives in ``conf/step/<name>.yaml``; this module knows only names, order and references.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

LADDERS = ("resnet50", "resnet200")


@dataclass(frozen=True)
class Step:
    index: str
    """The paper's step number ("0" ... "14"; side branches "9a", "9b")."""
    name: str
    change: str
    adopted: bool
    """False for the side branches (kernel 9 and 11), which later steps do not build on."""
    parent: str | None
    """The adopted step this one changes."""
    paper_top1: float | None
    paper_top1_std: float | None
    paper_gflops: float | None


# Where no faithful reading of the paper reaches its GFLOPs figure: why (shown by describe and
# the README; the tests check that the measured figure agrees with the explanation).
GFLOPS_NOTES = {
    "layer_norm": (
        "BN -> LN changes no conv: the measured figure is step 12's plus LayerNorm's own cost "
        "(fvcore: 5 per element). The paper's 4.46 is ConvNeXt-T's conv count (4.456), as if "
        "measured with the separate downsampling layers already in place."
    ),
}


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def ladder_steps(ladder: str = "resnet50") -> tuple[Step, ...]:
    """The steps of ``ladder`` in the paper's order, side branches included."""
    if ladder not in LADDERS:
        raise ValueError(f"ladder={ladder} is unknown; valid values: {', '.join(LADDERS)}")
    table = resources.files("roadmap.paper").joinpath(f"roadmap_{ladder[len('resnet'):]}.csv")
    rows = [r for r in csv.DictReader(io.StringIO(table.read_text())) if r["step"] != "ref"]
    steps, last_adopted = [], None
    for row in rows:
        adopted = row["step"].isdigit()
        steps.append(Step(
            index=row["step"], name=row["name"], change=row["change"], adopted=adopted,
            parent=last_adopted, paper_top1=_float(row["imagenet_top1_mean"]),
            paper_top1_std=_float(row["imagenet_top1_std"]), paper_gflops=_float(row["gflops"]),
        ))
        if adopted:
            last_adopted = row["name"]
    return tuple(steps)


def step_names(ladder: str = "resnet50") -> list[str]:
    return [s.name for s in ladder_steps(ladder)]


def get_step(name: str, ladder: str = "resnet50") -> Step:
    check_step_on_ladder(name, ladder)
    return next(s for s in ladder_steps(ladder) if s.name == name)


def check_step_on_ladder(name: str, ladder: str) -> None:
    names = step_names(ladder)
    if name not in names:
        raise ValueError(
            f"step={name} is not on ladder={ladder}; its steps are: {', '.join(names)}")


if __name__ == "__main__":  # the step names of a ladder, comma-separated (for make and sweeps)
    import sys

    print(",".join(step_names(sys.argv[1] if len(sys.argv) > 1 else "resnet50")))
