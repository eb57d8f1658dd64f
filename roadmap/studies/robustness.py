"""Which conclusions survive a change of protocol: ``python -m roadmap.studies.robustness OUT``.

``OUT`` holds one ladder sweep per protocol (``make robustness``: ``OUT/<protocol>/``). For each
step and protocol: the change of test top-1 against the parent step, with its 95% Welch
interval; per step a verdict across protocols (rule: ``experiments/protocol.md``) and whether a
robust verdict agrees in sign with the paper's change (Table 10). Writes ``robustness.csv``,
``robustness.md`` and ``robustness.png`` (one marker series per protocol, beside the paper).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from roadmap.results.collect import expected_runs, find_runs, summarise
from roadmap.results.stats import false_discovery
from roadmap.results.text import change, made_by, mean_std

ROBUST_GAIN, ROBUST_LOSS = "robust gain", "robust loss"
DEPENDENT, UNRESOLVED = "protocol-dependent", "unresolved"


def resolved_sign(delta: float, half_width: float) -> int:
    """+1 / -1 when the 95% interval ``delta +- half_width`` excludes 0, else 0 (also when
    either is unknown)."""
    if delta is None or half_width is None or math.isnan(delta) or math.isnan(half_width):
        return 0
    if delta - half_width > 0:
        return 1
    if delta + half_width < 0:
        return -1
    return 0


def verdict(changes: Sequence[tuple[float, float]]) -> str:
    """The verdict across protocols from each protocol's (change, 95% half-width)."""
    signs = [resolved_sign(d, h) for d, h in changes]
    if signs and all(s == 1 for s in signs):
        return ROBUST_GAIN
    if signs and all(s == -1 for s in signs):
        return ROBUST_LOSS
    if 1 in signs and -1 in signs:
        return DEPENDENT
    return UNRESOLVED


def agreement(result: str, paper_delta: float | None) -> str:
    """Whether a robust verdict has the sign of the paper's change ("" for the others)."""
    if result not in (ROBUST_GAIN, ROBUST_LOSS) or paper_delta is None \
            or math.isnan(paper_delta) or paper_delta == 0:
        return ""
    return "agrees" if (result == ROBUST_GAIN) == (paper_delta > 0) else "disagrees"


def _sweeps(out: Path, order: Sequence[str] | None) -> list[Path]:
    """The protocol sweep folders: ``order``'s (those that exist), else all, by name."""
    if order:
        return [out / name for name in order if (out / name).is_dir()]
    return sorted(p for p in out.iterdir() if p.is_dir())


def protocol_tables(out: Path, order: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Each protocol's ladder table (:func:`roadmap.results.collect.summarise`), by the
    protocol name its runs recorded; a folder per protocol sweep."""
    tables = {}
    for sweep in _sweeps(out, order):
        runs = find_runs(sweep)
        if not runs:  # a protocol not run yet stays a column: its verdicts are unresolved
            tables[sweep.name] = pd.DataFrame()
            continue
        names = {r.get("protocol.name") for r in runs if r.get("protocol.name")}
        name = names.pop() if len(names) == 1 else sweep.name
        table = summarise(runs, expected_runs(sweep))
        tables[name] = table.assign(variant="")  # one protocol per sweep: drop its override
    return tables


def _paper_deltas(table: pd.DataFrame) -> dict[str, float]:
    paper = dict(zip(table["step"], table["paper_top1"], strict=True))
    return {r["step"]: (r["paper_top1"] - paper[r["parent"]]
                        if r["parent"] in paper else math.nan)
            for r in table.to_dict("records")}


def _step_row(table: pd.DataFrame, step: str) -> dict:
    """A step's numbers in one protocol's table (NaN, n = 0 where it has none)."""
    keys = ("top1_mean", "top1_std", "delta_top1", "delta_ci95", "delta_pooled_ci95",
            "delta_p_pooled")
    if table.empty or step not in set(table["step"]):
        return {**{k: math.nan for k in keys}, "n": 0}
    return table[table["step"] == step].iloc[0].to_dict()


INTERVALS = ("welch", "pooled")
"""Which 95% interval a verdict reads: each change's Welch interval (amendments 1-2), or the one
from the seed std pooled over the protocol's steps (amendment 3)."""


def cross_table(tables: dict[str, pd.DataFrame], intervals: str = "welch") -> pd.DataFrame:
    """One row per step (ladder order): per protocol its mean, std, seeds, change against the
    parent, the change's Welch and pooled 95% half-widths, its pooled p-value and
    Benjamini-Hochberg q over every step x protocol test; the verdict on ``intervals``; the
    paper's change and agreement."""
    names = list(tables)
    first = next(t for t in tables.values() if not t.empty)
    paper = _paper_deltas(first)
    rows = []
    for step, index, parent in zip(first["step"], first["index"], first["parent"], strict=True):
        row = {"index": index, "step": step, "parent": parent}
        changes = []
        for name in names:
            r = _step_row(tables[name], step)
            row.update({f"{name}.top1_mean": r["top1_mean"], f"{name}.top1_std": r["top1_std"],
                        f"{name}.n": r["n"], f"{name}.delta": r["delta_top1"],
                        f"{name}.delta_ci95": r["delta_ci95"],
                        f"{name}.delta_pooled_ci95": r.get("delta_pooled_ci95", math.nan),
                        f"{name}.p_pooled": r.get("delta_p_pooled", math.nan)})
            half = r["delta_ci95"] if intervals == "welch" else r.get("delta_pooled_ci95")
            changes.append((r["delta_top1"], half))
        has_parent = isinstance(parent, str) and bool(parent)
        row["verdict"] = verdict(changes) if has_parent else ""
        row["paper_delta"] = paper.get(step, math.nan)
        row["paper_agreement"] = agreement(row["verdict"], row["paper_delta"])
        rows.append(row)
    cross = pd.DataFrame(rows)
    tests = [(i, f"{name}.p_pooled") for name in names for i in range(len(cross))]
    q = false_discovery([cross.at[i, col] for i, col in tests])
    for name in names:
        cross[f"{name}.q"] = math.nan
    for (i, col), value in zip(tests, q, strict=True):
        cross.at[i, col.replace(".p_pooled", ".q")] = value
    return cross


def fdr_statement(cross: pd.DataFrame, names: list[str], level: float = 0.05) -> str:
    """The false-discovery statement over every step x protocol test (pooled t-tests,
    Benjamini-Hochberg)."""
    tested = [(r["step"], n, r[f"{n}.q"]) for r in cross.to_dict("records") for n in names
              if r.get(f"{n}.q") == r.get(f"{n}.q")]
    kept = [f"{step} ({n}, q = {q:.3f})" for step, n, q in tested if q < level]
    return (f"False discovery: of {len(tested)} step x protocol tests (two-sided t-tests on "
            f"the seed std pooled over each protocol's steps), {len(kept)} have a "
            f"Benjamini-Hochberg q < {level}" + (f": {', '.join(kept)}." if kept else "."))


def findings(cross: pd.DataFrame, names: list[str], level: float = 0.05) -> list[str]:
    """The steps stated as findings (amendment 3, rule 7): a robust verdict whose test has a
    Benjamini-Hochberg q < ``level`` under every protocol."""
    return [r["step"] for r in cross.to_dict("records")
            if r["verdict"] in (ROBUST_GAIN, ROBUST_LOSS)
            and all(r.get(f"{n}.q", math.nan) < level for n in names)]


def to_markdown(cross: pd.DataFrame, names: list[str], made: str,
                intervals: str = "welch") -> str:
    """The view: per step and protocol, top-1 and its change; the verdicts; a summary."""
    head = ["#", "step"] + [f"{n}: top-1" for n in names] + [f"{n}: vs parent" for n in names]
    head += ["verdict", "paper vs parent", "agrees with paper"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cross.to_dict("records"):
        cells = [str(r["index"]), r["step"]]
        cells += [mean_std(r[f"{n}.top1_mean"], r[f"{n}.top1_std"], r[f"{n}.n"]) for n in names]
        key = "delta_ci95" if intervals == "welch" else "delta_pooled_ci95"
        cells += [change(r[f"{n}.delta"], r.get(f"{n}.{key}", math.nan)) for n in names]
        cells += [r["verdict"], change(r["paper_delta"], math.nan), r["paper_agreement"]]
        lines.append("| " + " | ".join(cells) + " |")
    counts = cross["verdict"][cross["verdict"] != ""].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in (ROBUST_GAIN, ROBUST_LOSS,
                                                             DEPENDENT, UNRESOLVED))
    return "\n".join([
        "# Robustness across protocols", "", f"Made by {made}.", "",
        f"Protocols: {', '.join(f'`{n}`' for n in names)} (conf/protocol/; "
        "experiments/protocol.md). Test top-1 %, mean ± std over seeds; change against the "
        f"parent step with its 95% {'Welch' if intervals == 'welch' else 'pooled-variance'} "
        "interval. A change is resolved when its interval excludes 0; the verdict rule and the "
        "paper comparison are in experiments/protocol.md.",
        "", *lines, "", f"Verdicts: {summary}.", "", fdr_statement(cross, names), "",
        "Findings (a robust verdict whose test has q < 0.05 under every protocol): "
        + (", ".join(f"{step} ({cross.loc[cross['step'] == step, 'verdict'].iloc[0]})"
                     for step in findings(cross, names)) or "none") + ".", ""])


MARKERS = ("o", "s", "^", "D", "v", "P")


def figure(cross: pd.DataFrame, names: list[str]):
    """The ladder under each protocol (one marker series each, mean ± std over seeds), and the
    paper's ImageNet top-1 per step below it, on the same step axis."""
    import matplotlib.pyplot as plt

    from roadmap.results.plots import PAPER

    x = list(range(len(cross)))
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.4]})
    for k, name in enumerate(names):
        shift = (k - (len(names) - 1) / 2) * 0.18
        ax.errorbar([i + shift for i in x], cross[f"{name}.top1_mean"],
                    yerr=cross[f"{name}.top1_std"], fmt=MARKERS[k % len(MARKERS)] + "-",
                    capsize=2, markersize=5, linewidth=0.8, label=name)
    ax.set_ylabel("test top-1 % (mean ± std over seeds)")
    ax.legend(title="protocol", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("The ladder under each protocol")
    axp.plot(x, cross["paper_top1"] if "paper_top1" in cross else [math.nan] * len(x), "^--",
             color=PAPER)
    axp.set_ylabel("paper ImageNet\ntop-1 %")
    axp.set_xticks(x, [f"{i} {s}" for i, s in zip(cross["index"], cross["step"], strict=True)],
                   rotation=55, ha="right", fontsize=8)
    axp.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write(out: Path, dest: Path | None = None, order: Sequence[str] | None = None,
          intervals: str = "welch") -> pd.DataFrame:
    """The view of the protocol sweeps under ``out`` (the folders ``order`` names, in that
    order; default: every folder), into ``dest`` (default: ``out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = protocol_tables(out, order)
    if not tables:
        raise FileNotFoundError(f"no protocol sweeps with runs under {out}; run `make "
                                "robustness`")
    if all(t.empty for t in tables.values()):
        raise FileNotFoundError(f"no finished runs under {out}; run `make robustness`")
    names = list(tables)
    cross = cross_table(tables, intervals)
    first = next(t for t in tables.values() if not t.empty)
    cross.insert(cross.columns.get_loc("paper_delta"), "paper_top1", list(first["paper_top1"]))
    runs = [r for sweep in _sweeps(out, order) for r in find_runs(sweep)]
    made = made_by(runs)
    dest = dest or out
    dest.mkdir(parents=True, exist_ok=True)
    cross.to_csv(dest / "robustness.csv", index=False)
    from roadmap.studies import fidelity

    faithful = fidelity.to_markdown(fidelity.ladders_of(cross, intervals), "resnet50",
                                    [str(dest / "robustness.csv")], intervals)
    (dest / "robustness.md").write_text(to_markdown(cross, names, made, intervals) + "\n"
                                        + faithful.replace("# Fidelity", "## Fidelity", 1)
                                        + "\n")
    fig = figure(cross, names)
    fig.savefig(dest / "robustness.png", dpi=120)
    plt.close(fig)
    return cross


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="conclusions across protocols")
    parser.add_argument("out", type=Path, help="folder of one ladder sweep per protocol")
    parser.add_argument("--dest", type=Path, help="where to write (default: OUT)")
    parser.add_argument("--protocols", help="a,b,c: the sweep folders, in this order "
                        "(default: every folder of OUT)")
    parser.add_argument("--intervals", choices=INTERVALS, default="welch",
                        help="the interval verdicts read: welch (amendments 1-2) or pooled "
                        "(amendment 3)")
    args = parser.parse_args(argv)
    try:
        cross = write(args.out, args.dest,
                      args.protocols.split(",") if args.protocols else None, args.intervals)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = cross["verdict"].value_counts()
    print(f"roadmap.studies.robustness: {len(cross)} steps; "
          + ", ".join(f"{v}: {counts.get(v, 0)}" for v in (ROBUST_GAIN, ROBUST_LOSS, DEPENDENT,
                                                           UNRESOLVED))
          + f" -> {(args.dest or args.out) / 'robustness.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
