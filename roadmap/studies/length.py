"""How the ladder's end-to-end gaps move with training length:
``python -m roadmap.studies.length SHORT LONG [--out DIR]``.

``SHORT`` and ``LONG`` are sweeps of the same protocol at two lengths (``make length``: the
selected protocol's 3-seed ladder at 2 epochs and ``resnet50``, ``recipe`` and
``separate_downsampling`` at 10). For each length: each step's test top-1 (mean ± std) and the
gaps between them (recipe - step 0, end - recipe, end - step 0) with 95% Welch intervals.
Writes ``length.md`` and ``length.csv``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from roadmap.results.collect import expected_runs, find_runs, summarise
from roadmap.results.stats import welch_interval
from roadmap.results.text import change, made_by, mean_std

STEPS = ("resnet50", "recipe", "separate_downsampling")
GAPS = (("recipe", "resnet50"), ("separate_downsampling", "recipe"),
        ("separate_downsampling", "resnet50"))


def _table(sweep: Path) -> tuple[pd.DataFrame, int | None, list[dict]]:
    runs = find_runs(sweep)
    if not runs:
        raise FileNotFoundError(f"no runs under {sweep}")
    table = summarise(runs, expected_runs(sweep)).drop_duplicates("step").set_index("step")
    epochs = {r.get("epochs") for r in runs if r["status"] == "completed"}
    return table, (epochs.pop() if len(epochs) == 1 else None), runs


def rows(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """One row per length: each step's mean ± std and seeds, each gap ± its 95% interval."""
    out = []
    for label, t in tables.items():
        row = {"length": label}
        for step in STEPS:
            r = t.loc[step] if step in t.index else None
            row[f"{step}.mean"] = r["top1_mean"] if r is not None else math.nan
            row[f"{step}.std"] = r["top1_std"] if r is not None else math.nan
            row[f"{step}.n"] = int(r["n"]) if r is not None else 0
        for a, b in GAPS:
            row[f"{a}-{b}"] = row[f"{a}.mean"] - row[f"{b}.mean"]
            row[f"{a}-{b}.ci95"] = welch_interval(row[f"{a}.mean"], row[f"{a}.std"],
                                                  row[f"{a}.n"], row[f"{b}.mean"],
                                                  row[f"{b}.std"], row[f"{b}.n"])
        out.append(row)
    return out


def to_markdown(table: list[dict], made: str) -> str:
    head = ["length", *STEPS, *(f"{a} - {b}" for a, b in GAPS)]
    lines = ["# Training length", "", f"Made by {made}.", "",
             "Test top-1 %, mean ± std over seeds (n), and the gaps between the steps with "
             "their 95% Welch intervals, at each training length.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["length"]]
        cells += [f"{mean_std(r[f'{s}.mean'], r[f'{s}.std'], r[f'{s}.n'])} ({r[f'{s}.n']})"
                  for s in STEPS]
        cells += [change(r[f"{a}-{b}"], r[f"{a}-{b}.ci95"]) for a, b in GAPS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the end-to-end gaps at two training lengths")
    parser.add_argument("short", type=Path)
    parser.add_argument("long", type=Path)
    parser.add_argument("--out", type=Path, help="where to write (default: LONG)")
    args = parser.parse_args(argv)
    try:
        tables, runs = {}, []
        for sweep in (args.short, args.long):
            table, epochs, found = _table(sweep)
            tables[f"{epochs} epochs" if epochs else str(sweep)] = table
            runs += found
    except FileNotFoundError as exc:
        print(f"error: {exc}; run `make length`", file=sys.stderr)
        return 2
    made = made_by(runs)
    table = rows(tables)
    out = args.out or args.long
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(out / "length.csv", index=False)
    (out / "length.md").write_text(to_markdown(table, made))
    print(f"roadmap.studies.length -> {out / 'length.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
