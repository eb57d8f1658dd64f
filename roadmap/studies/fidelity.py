"""How far a ladder reproduces the paper's: ``python -m roadmap.studies.fidelity TABLE...``.

A TABLE is a ``results.csv`` (one ladder, :mod:`roadmap.results.collect`) or a
``robustness.csv`` (one ladder per protocol, :mod:`roadmap.studies.robustness`). Each change is
a step against its parent (16 on the ResNet-50 ladder, the kernel side branches included):

- **the paper's own interval**: Table 10 gives each step's ImageNet top-1 as mean and std over
  3 seeds, so each of the paper's changes has a 95% Welch interval. Step 0 (torchvision's
  published ResNet-50) has no std: it is taken as a known constant, so the ``recipe`` change's
  interval is the t-interval of step 1's mean alone. A change the interval resolves has the
  paper's sign; the others are the paper's *flat* changes;
- **per protocol**: the changes *reproduced* (the paper resolves them and the ladder resolves
  them with the paper's sign), *contradicted* (both resolve them, with other signs), *missed*
  (the paper resolves them, the ladder does not), and the paper-flat changes the ladder
  resolves; the Spearman correlation of the ladder's changes with the paper's; the ladder's end
  against its start, with its Welch interval.

Fidelity is reported, never used to choose anything (experiments/protocol.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from scipy import stats

from roadmap.ladder import LADDERS, ladder_steps
from roadmap.results.stats import welch_interval
from roadmap.results.text import change

PAPER_SEEDS = 3
"""Seeds per step behind Table 10's means and stds."""
REPRODUCED, CONTRADICTED, MISSED = "reproduced", "contradicted", "missed"
FLAT_RESOLVED, FLAT = "paper-flat, resolved here", "paper-flat, flat here"


def sign_of(delta: float, half: float) -> int:
    """+1 / -1 when ``delta +- half`` excludes 0, else 0 (also when either is unknown)."""
    if delta is None or half is None or not (math.isfinite(delta) and math.isfinite(half)):
        return 0
    return 1 if delta - half > 0 else -1 if delta + half < 0 else 0


def paper_changes(ladder: str = "resnet50") -> pd.DataFrame:
    """Each change of the paper's ladder: its step, parent, change of top-1 and the change's
    95% Welch interval (step 0 a known constant), and the sign the interval resolves."""
    steps = {s.name: s for s in ladder_steps(ladder)}
    rows = []
    for s in steps.values():
        parent = steps.get(s.parent) if s.parent else None
        if parent is None or s.paper_top1 is None or parent.paper_top1 is None:
            continue
        delta = s.paper_top1 - parent.paper_top1
        half = welch_interval(s.paper_top1, s.paper_top1_std or 0.0, PAPER_SEEDS,
                              parent.paper_top1, parent.paper_top1_std or 0.0, PAPER_SEEDS)
        rows.append({"step": s.name, "parent": s.parent, "paper_delta": delta,
                     "paper_ci95": half, "paper_sign": sign_of(delta, half)})
    return pd.DataFrame(rows)


INTERVALS = {"welch": "delta_ci95", "pooled": "delta_pooled_ci95"}
"""Which of a table's change intervals decides "resolved": Welch's (amendments 1-2) or the one
from the seed std pooled over the protocol's steps (amendment 3, rule 7)."""


def ladders_of(table: pd.DataFrame, intervals: str = "welch") -> dict[str, pd.DataFrame]:
    """The ladders a table holds, by protocol: ``step, top1_mean, top1_std, n, delta,
    delta_ci95`` each, the last the ``intervals`` kind's (a ``robustness.csv`` holds
    ``<protocol>.<column>``)."""
    cols = ["top1_mean", "top1_std", "n", "delta", INTERVALS[intervals]]
    named = ["top1_mean", "top1_std", "n", "delta", "delta_ci95"]
    prefixes = [c[: -len(".delta")] for c in table.columns if c.endswith(".delta")]
    if prefixes:
        return {p: table[["step", *(f"{p}.{c}" for c in cols)]].set_axis(["step", *named],
                                                                          axis=1)
                for p in prefixes}
    variants = table["variant"].fillna("").astype(str) if "variant" in table else \
        pd.Series([""] * len(table), index=table.index)
    base = "ladder"
    if "protocol.name" in table and table["protocol.name"].nunique() == 1:
        base = str(table["protocol.name"].dropna().iloc[0])
    renamed = table.rename(columns={"delta_top1": "delta"})
    return {base + (f" ({v})" if v else ""):
            renamed.loc[variants == v, ["step", *cols]].set_axis(["step", *named], axis=1)
            for v in dict.fromkeys(variants)}


def categorise(ladder_sign: int, paper_sign: int) -> str:
    if paper_sign:
        return (MISSED if not ladder_sign else
                REPRODUCED if ladder_sign == paper_sign else CONTRADICTED)
    return FLAT_RESOLVED if ladder_sign else FLAT


def fidelity(ladder: pd.DataFrame, paper: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Each change's category (:func:`categorise`) and the summary: the steps in each category,
    the Spearman correlation of the changes, the end against the start."""
    rows = paper.merge(ladder[["step", "delta", "delta_ci95"]], on="step", how="left")
    rows["sign"] = [sign_of(d, h) for d, h in zip(rows["delta"], rows["delta_ci95"],
                                                  strict=True)]
    rows["category"] = [categorise(s, p) for s, p in zip(rows["sign"], rows["paper_sign"],
                                                         strict=True)]
    both = rows.dropna(subset=["delta"])
    rho, p_value = (stats.spearmanr(both["delta"], both["paper_delta"]) if len(both) > 2
                    else (math.nan, math.nan))
    summary = {c: list(rows.loc[rows["category"] == c, "step"])
               for c in (REPRODUCED, CONTRADICTED, MISSED, FLAT_RESOLVED)}
    signed = both[both["paper_delta"] != 0]  # the paper's kernel_9 change is 0.00
    summary.update(paper_resolved=int((rows["paper_sign"] != 0).sum()), changes=len(rows),
                   measured=len(signed), spearman=float(rho), spearman_p=float(p_value),
                   same_sign=int((signed["delta"] * signed["paper_delta"] > 0).sum()),
                   **end_against_start(ladder))
    return rows, summary


def end_against_start(ladder: pd.DataFrame) -> dict:
    """The last step's top-1 against step 0's, with its 95% Welch interval."""
    first, last = ladder.iloc[0], ladder.iloc[-1]
    delta = last["top1_mean"] - first["top1_mean"]
    half = welch_interval(last["top1_mean"], last["top1_std"], int(last["n"] or 0),
                          first["top1_mean"], first["top1_std"], int(first["n"] or 0))
    return {"end": last["step"], "start": first["step"], "end_delta": float(delta),
            "end_ci95": float(half)}


def in_ladder_order(ladder: pd.DataFrame, name: str) -> pd.DataFrame:
    order = [s.name for s in ladder_steps(name)]
    known = ladder[ladder["step"].isin(order)]
    return known.set_index("step").loc[[s for s in order if s in set(known["step"])]] \
        .reset_index()


def section(name: str, rows: pd.DataFrame, summary: dict) -> list[str]:
    """A protocol's fidelity as markdown lines."""
    def listed(key: str) -> str:
        return ", ".join(summary[key]) or "none"

    rho = summary["spearman"]
    return [
        f"### {name}", "",
        f"- reproduced ({len(summary[REPRODUCED])} of the paper's {summary['paper_resolved']} "
        f"resolved changes): {listed(REPRODUCED)}",
        f"- contradicted: {listed(CONTRADICTED)}",
        f"- missed: {listed(MISSED)}",
        f"- paper-flat changes resolved here: {listed(FLAT_RESOLVED)}",
        f"- same sign as the paper: {summary['same_sign']} of the {summary['measured']} changes "
        "the paper does not measure as 0.00; "
        f"Spearman correlation of the changes: {rho:.2f} (p = {summary['spearman_p']:.2f})"
        if math.isfinite(rho) else "- Spearman correlation: not enough changes",
        f"- {summary['end']} against {summary['start']}: "
        f"{change(summary['end_delta'], summary['end_ci95'])}", ""]


def to_markdown(tables: dict[str, pd.DataFrame], ladder: str, sources: Sequence[str],
                intervals: str = "welch") -> str:
    paper = paper_changes(ladder)
    here = ("its 95% Welch interval" if intervals == "welch" else
            "its 95% interval from the seed std pooled over its protocol's steps")
    lines = ["# Fidelity to the paper", "",
             f"From {', '.join(f'`{s}`' for s in sources)}, by `python -m "
             "roadmap.studies.fidelity`. The paper's changes are Table 10's (ImageNet, 3 seeds a "
             "step) with their own 95% Welch intervals (step 0 a known constant); a change "
             f"here is resolved when {here} excludes 0 (the end against the start: Welch). "
             "Reported, never used to choose anything.", "",
             f"The paper resolves {int((paper['paper_sign'] != 0).sum())} of its "
             f"{len(paper)} changes: "
             + ", ".join(f"{r['step']} {change(r['paper_delta'], r['paper_ci95'])}"
                         for r in paper.to_dict("records") if r["paper_sign"]) + ".", ""]
    for name, table in tables.items():
        ordered = in_ladder_order(table, ladder)
        if ordered.empty:
            lines += [f"### {name}", "", "No step of the ladder.", ""]
            continue
        rows, summary = fidelity(ordered, paper)
        lines += section(name, rows, summary)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path,
                        help="results.csv or robustness.csv files")
    parser.add_argument("--ladder", default="resnet50", choices=sorted(LADDERS))
    parser.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    parser.add_argument("--intervals", choices=sorted(INTERVALS), default="welch",
                        help="the ladder's intervals that resolve a change (default: welch)")
    args = parser.parse_args(argv)
    tables: dict[str, pd.DataFrame] = {}
    for path in args.tables:
        if not path.is_file():
            print(f"error: {path} not found; pass a results.csv or robustness.csv",
                  file=sys.stderr)
            return 2
        for name, table in ladders_of(pd.read_csv(path), args.intervals).items():
            tables[name if name not in tables else f"{name} ({path})"] = table
    text = to_markdown(tables, args.ladder, [str(p) for p in args.tables], args.intervals)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"roadmap.studies.fidelity: wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
