"""The rules of experiments/protocol.md's amendment 3 that choose the ``study`` preset, computed
from run directories (validation top-1 and wall times only; nothing is typed by hand):

    python -m roadmap.studies.study length SWEEP --reference RUNS_CSV [--out DIR]

``length`` (rule 3): ``SWEEP`` holds step 0 and the ``recipe`` step at E = 2, 4, 8, 16, 32
epochs (``python -m roadmap.sweep SWEEP --steps resnet50,recipe --seeds 0,1,2 -- epochs=2,4,8,
16,32``). The chosen length is the shortest E whose doubling adds less than 0.3 points of mean
validation top-1 to both steps, or the longest E whose whole ladder fits the budget (rule 1),
whichever is shorter. The ladder's time at E is predicted from ``RUNS_CSV``, the ``runs.csv`` of
one seed of the ladder at the same size (each run's ``wall_s`` scaled by E over its epochs, plus
the sweep's own overhead, :data:`OVERHEAD_S`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from roadmap.results.collect import find_runs

LENGTHS = (2, 4, 8, 16, 32)
BASELINES = ("resnet50", "recipe")
MARGIN = 0.3
"""Points of mean validation top-1 below which a doubling of the length adds nothing."""
BUDGET_MIN = 45.0
LEFT_FOR_SLOWER = 0.10
"""The prediction must stay 10% under the budget."""
OVERHEAD_S = 40.0
"""A sweep's time beyond its runs' ``wall_s`` (start-up, tables, figures): `make roadmap` took
340 s for 300 s of runs (runs/timing at 527f8da, docs/protocol.md)."""


def validation_by_length(runs: list[dict], steps: Sequence[str] = BASELINES,
                         lengths: Sequence[int] = LENGTHS, seeds: int = 3) -> pd.DataFrame:
    """Per step and length: the mean validation top-1 over its completed seeds and whether all
    ``seeds`` completed (only complete lengths are eligible)."""
    rows = []
    for step in steps:
        for epochs in lengths:
            done = [r["val_top1"] for r in runs if r.get("step") == step
                    and r.get("epochs") == epochs and r.get("status") == "completed"]
            rows.append({"step": step, "epochs": epochs,
                         "val_top1": sum(done) / len(done) if done else math.nan,
                         "n": len(done), "complete": len(done) >= seeds})
    return pd.DataFrame(rows)


def converged_length(table: pd.DataFrame, margin: float = MARGIN) -> int | None:
    """The shortest E whose doubling adds less than ``margin`` to every step's mean
    validation top-1 (both E and 2E complete); None if none does."""
    index = {(r["step"], r["epochs"]): r for r in table.to_dict("records")}
    for epochs in sorted(table["epochs"].unique()):
        pairs = [(index.get((s, epochs)), index.get((s, 2 * epochs)))
                 for s in table["step"].unique()]
        if all(a and b and a["complete"] and b["complete"]
               and b["val_top1"] - a["val_top1"] < margin for a, b in pairs):
            return int(epochs)
    return None


def predicted_minutes(reference: pd.DataFrame, epochs: int) -> float:
    """One seed of the ladder at ``epochs``, predicted from a ladder's ``runs.csv``."""
    done = reference[reference["status"] == "completed"]
    return (float((done["wall_s"] * epochs / done["epochs"]).sum()) + OVERHEAD_S) / 60


def budget_length(reference: pd.DataFrame, lengths: Sequence[int] = LENGTHS,
                  budget: float = BUDGET_MIN * (1 - LEFT_FOR_SLOWER)) -> int | None:
    """The longest E whose predicted ladder fits ``budget`` minutes; None if none does."""
    fitting = [e for e in lengths if predicted_minutes(reference, e) <= budget]
    return max(fitting) if fitting else None


def choose_length(table: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Rule 3: the shorter of the converged length and the budget's; which rule applied."""
    converged, fits = converged_length(table), budget_length(reference)
    if converged is None and fits is None:
        return {"epochs": None, "rule": "none: nothing converged and nothing fits the budget",
                "converged": None, "budget": None}
    if fits is None or (converged is not None and converged <= fits):
        chosen, rule = converged, "converged"
    else:
        chosen, rule = fits, "budget"
    return {"epochs": chosen, "rule": rule, "converged": converged, "budget": fits,
            "predicted_minutes": {e: round(predicted_minutes(reference, e), 1)
                                  for e in LENGTHS}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="amendment 3's rules, from the runs")
    sub = parser.add_subparsers(dest="rule", required=True)
    length = sub.add_parser("length", help="rule 3: the study's training length")
    length.add_argument("sweep", type=Path)
    length.add_argument("--reference", type=Path, required=True,
                        help="runs.csv of one seed of the ladder at the same size")
    length.add_argument("--out", type=Path, help="where to write length-rule.json/.md")
    args = parser.parse_args(argv)
    for path in (args.sweep, args.reference):
        if not path.exists():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    table = validation_by_length(find_runs(args.sweep))
    if not table["complete"].all():
        short = table[~table["complete"]]
        print(f"error: the length study in {args.sweep} is not complete ("
              + ", ".join(f"{r['step']} at {r['epochs']}: {r['n']} of 3 seeds"
                          for r in short.to_dict("records")[:4])
              + (" ..." if len(short) > 4 else "") + "); rerun make study-length to finish it",
              file=sys.stderr)
        return 2
    choice = choose_length(table, pd.read_csv(args.reference))
    out = args.out or args.sweep
    out.mkdir(parents=True, exist_ok=True)
    (out / "length-rule.json").write_text(json.dumps(
        {**choice, "validation": table.to_dict("records")}, indent=1) + "\n")
    (out / "length-rule.md").write_text(
        "# Rule 3: the study's length (experiments/protocol.md, amendment 3)\n\n"
        + table.to_markdown(index=False, floatfmt=".2f") + "\n\n"
        + f"Chosen: {choice['epochs']} epochs ({choice['rule']}; converged at "
          f"{choice['converged']}, the budget allows {choice['budget']}).\n")
    print(f"roadmap.studies.study: length {choice['epochs']} epochs ({choice['rule']}) -> "
          f"{out / 'length-rule.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
