"""Figures of a results table (``results.csv`` from :mod:`roadmap.results.collect`).

    python -m roadmap.results.plots results/resnet50-cpu/results.csv [--out DIR]  # or: make plots

Writes ``ladder.png`` (the accuracy ladder drawn like the paper's Figure 2, beside the paper's
ImageNet values), ``kernels.png`` (the kernel-size ablation) and ``accuracy_vs_gflops.png``.
The functions take the table only, so the notebooks in ``analysis/`` draw the same figures.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.text import Text

ADOPTED, SIDE, PAPER = "#3b6ea8", "#b0b0b0", "#c9733a"
KERNEL = "model.kernel_size"


def load(path: str | Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"index": str, "step": str, "variant": str})
    table["variant"] = table["variant"].fillna("")
    return table


def ladder_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The ladder itself: the rows without extra overrides, in ladder order."""
    return table[table["variant"] == ""].reset_index(drop=True)


def _limits(values: pd.Series, errors: pd.Series) -> tuple[float, float]:
    lo = (values - errors.fillna(0)).min()
    hi = (values + errors.fillna(0)).max()
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0, 100
    pad = max((hi - lo) * 0.15, 0.5)
    return lo - pad, hi + pad


def ladder_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """One bar per step (top to bottom, as in Figure 2), seeds' std as error bars, GFLOPs
    annotated, side branches grey; the paper's ImageNet top-1 in a second panel."""
    rows = ladder_rows(table)
    labels = [f"{i}  {s}" for i, s in zip(rows["index"], rows["step"], strict=True)]
    colors = [ADOPTED if a in (True, "True") else SIDE for a in rows["adopted"]]
    y = range(len(rows))
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(12, 0.42 * len(rows) + 1.6), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 2]})
    std = rows["top1_std"].fillna(0)
    ax.barh(list(y), rows["top1_mean"].fillna(0), xerr=std, color=colors, capsize=3,
            error_kw={"elinewidth": 1})
    lo, hi = _limits(rows["top1_mean"], rows["top1_std"])
    ax.set_xlim(lo, hi)
    for i, r in rows.iterrows():
        if r["n"] == 0 or pd.isna(r["top1_mean"]):
            ax.text(lo, i, "  " + str(r["status"])[:60], va="center", fontsize=8, color="red")
            continue
        text = f"{r['top1_mean']:.2f}"
        if not pd.isna(r["gflops"]):
            text += f"  ({r['gflops']:.3g} GFLOPs)"
        ax.text(r["top1_mean"] + std[i] + (hi - lo) * 0.01, i, text, va="center", fontsize=8)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    n_seeds = int(rows["n"].max()) if len(rows) else 0
    ax.set_xlabel(f"test top-1 % (mean ± std over {n_seeds} seed{'s' * (n_seeds != 1)})")
    ax.set_title(title or "This run")
    paper = rows["paper_top1"]
    axp.barh(list(y), paper.fillna(0), color=[PAPER if c == ADOPTED else SIDE for c in colors])
    plo, phi = _limits(paper, paper * 0)
    axp.set_xlim(plo, phi)
    for i, r in rows.iterrows():
        if not pd.isna(r["paper_top1"]):
            gf = "" if pd.isna(r["paper_gflops"]) else f"  ({r['paper_gflops']:.2f} GFLOPs)"
            axp.text(r["paper_top1"] + (phi - plo) * 0.01, i, f"{r['paper_top1']:.2f}{gf}",
                     va="center", fontsize=8)
    axp.set_xlabel("ImageNet-1K top-1 % (paper, Table 10)")
    axp.set_title("Paper")
    fig.tight_layout()
    return fig


def _flags(row) -> tuple:
    return tuple(str(row[c]) for c in row.index if c.startswith("model.") and c != KERNEL)


def kernel_steps(rows: pd.DataFrame) -> pd.DataFrame:
    """The ladder's steps that change only the kernel size against their parent, and those
    parents, read from the model-flag columns; ``k`` is the kernel size."""
    if KERNEL not in rows:
        return rows.iloc[:0].assign(k=[])
    by_step = {r["step"]: r for _, r in rows.iterrows()}
    chosen = set()
    for _, r in rows.iterrows():
        p = by_step.get(r["parent"])
        if p is not None and p[KERNEL] != r[KERNEL] and _flags(p) == _flags(r):
            chosen |= {r["step"], p["step"]}
    pts = rows[rows["step"].isin(chosen)]
    return pts.assign(k=pts[KERNEL].astype(float)).sort_values("k")


def kernel_sweeps(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per step, its variants (overrides) that differ in kernel size, by kernel size."""
    if KERNEL not in table:
        return {}
    variants = table[table["variant"] != ""]
    return {step: group.assign(k=group[KERNEL].astype(float)).sort_values("k")
            for step, group in variants.groupby("step") if group[KERNEL].nunique() > 1}


def kernel_figure(table: pd.DataFrame) -> plt.Figure:
    """Accuracy against the depthwise kernel size: the ladder's kernel steps, any
    ``model.kernel_size`` sweep, and the paper's values."""
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = kernel_steps(ladder_rows(table))
    if len(pts):
        ax.errorbar(pts["k"], pts["top1_mean"], yerr=pts["top1_std"], marker="o", capsize=3,
                    color=ADOPTED, label="ladder steps")
    for step, group in kernel_sweeps(table).items():
        ax.errorbar(group["k"], group["top1_mean"], yerr=group["top1_std"], marker="s",
                    capsize=3, label=f"{step}, model.kernel_size sweep")
    ax.set_xlabel("depthwise kernel size")
    ax.set_ylabel("test top-1 %")
    ax.set_xticks([3, 5, 7, 9, 11])
    if len(pts) and pts["paper_top1"].notna().any():
        twin = ax.twinx()
        twin.plot(pts["k"], pts["paper_top1"], "--", marker="^", color=PAPER)
        twin.set_ylabel("paper ImageNet top-1 % (dashed)", color=PAPER)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Kernel size")
    fig.tight_layout()
    return fig


def scatter_figure(table: pd.DataFrame) -> plt.Figure:
    """Accuracy against GFLOPs for every step, this run and the paper."""
    rows = ladder_rows(table)
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, x, yv, err, title, color in (
        (ax, rows["gflops"], rows["top1_mean"], rows["top1_std"], "This run", ADOPTED),
        (axp, rows["paper_gflops"], rows["paper_top1"], None, "Paper (ImageNet, 224px)", PAPER),
    ):
        axis.errorbar(x, yv, yerr=err, fmt="o", color=color, capsize=3)
        axis.set_xlabel("GFLOPs")
        axis.set_ylabel("top-1 %")
        axis.set_title(title)
    fig.tight_layout()
    for axis, x, yv in ((ax, rows["gflops"], rows["top1_mean"]),
                        (axp, rows["paper_gflops"], rows["paper_top1"])):
        place_labels(axis, x, yv, rows["step"])
    return fig


def place_labels(axis, x, y, names, fontsize: int = 7) -> None:
    """Name every point, moving a label down (with a leader line) until it overlaps no label
    placed before it, so that no name is printed over another."""
    renderer = axis.figure.canvas.get_renderer()
    placed = []
    points = sorted(((float(a), float(b), n) for a, b, n in zip(x, y, names, strict=True)
                     if not (pd.isna(a) or pd.isna(b))), key=lambda p: -p[1])
    for a, b, name in points:
        for shift in range(0, 40):
            label = axis.annotate(name, (a, b), xytext=(4, 2 - 1.2 * fontsize * shift),
                                  textcoords="offset points", fontsize=fontsize,
                                  arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5}
                                  if shift else None)
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the text, not its leader line
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        placed.append(box)


FIGURES = {"ladder": ladder_figure, "kernels": kernel_figure,
           "accuracy_vs_gflops": scatter_figure}


def render(results: str | Path, out: str | Path | None = None) -> list[Path]:
    table = load(results)
    out = Path(out) if out else Path(results).parent
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in FIGURES.items():
        fig = make(table)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="figures of a results table")
    parser.add_argument("results", help="results.csv written by roadmap.results.collect")
    parser.add_argument("--out", help="folder for the PNGs (default: beside the table)")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # files only; a notebook keeps its inline backend
    if not Path(args.results).is_file():
        print(f"error: {args.results} not found; make one with `python -m roadmap.results.collect "
              "<sweep dir>` (make roadmap does)", file=sys.stderr)
        return 2
    for path in render(args.results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
