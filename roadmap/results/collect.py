"""Results tables from a sweep's run directories: ``python -m roadmap.results.collect <sweep>``.

Writes ``results.csv`` (one row per step and variant, in ladder order), ``results.md`` (the same,
readable, with failed, missing and unreadable runs listed) and ``runs.csv`` (one row per run)
beside the sweep, or into ``--out``. Every run the sweep asked for appears: a failed, diverged,
unfinished or never-started run is a row with its status, never a silent gap; a corrupt run
directory is reported and skipped.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from roadmap.errors import first_line
from roadmap.ladder import LADDERS, ladder_steps
from roadmap.results.stats import pooled_change, pooled_std, t_interval, welch_interval
from roadmap.results.text import change, made_by, mean_std
from roadmap.rundir import MULTIRUN, CorruptRecord, RunDir, find_run_dirs, refusals, variant

OUTPUTS = ("results.csv", "results.md", "runs.csv")
MODEL_PREFIX = "model."
"""Columns ``model.<flag>``: the flags of the network each run trained, from its metrics."""
PROTOCOL_PREFIX = "protocol."
"""Columns ``protocol.<key>``: the protocol each run trained under (its name and choices)."""


# -- reading run directories --------------------------------------------------------------------

NAMED_BY_HYDRA = ("step", "seed", "ladder", "preset", "variant")
"""A row's identity comes from the run's ``.hydra/`` files, not from its record."""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


def read_run(run: RunDir) -> dict:
    """One run directory as a row; ``status`` says what state it is in (``corrupt``, with the
    reason in ``error``, for anything unreadable). Never raises on a run's files."""
    row = {"run_dir": str(run.path), "status": "not started", "error": ""}
    try:
        row.update(run.identity())
    except Exception as exc:
        return {**row, **run.identity_from_name(), "status": "corrupt",
                "error": f".hydra/ config unreadable: {_error(exc)}"}
    try:
        record = run.read_record()
    except CorruptRecord as exc:
        return {**row, "status": "corrupt", "error": str(exc)}
    if record is not None:
        values = {**record.identity, **record.metrics}
        row.update({k: v for k, v in values.items()
                    if k not in NAMED_BY_HYDRA and not isinstance(v, (dict, list))})
        row.update(prefixed(MODEL_PREFIX, record.metrics.get("model")))
        row.update(prefixed(PROTOCOL_PREFIX, record.identity.get("protocol")))
        row["status"], row["error"] = record.status, str(record.error or "")
    elif run.has_checkpoint():
        row.update(status="incomplete",
                   error=f"stopped after epoch {run.epochs_logged()}; rerun to resume")
    return row


def prefixed(prefix: str, values) -> dict:
    """A dict of a run's metrics as ``<prefix><key>`` columns (lists, e.g. depths, as text)."""
    if not isinstance(values, dict):
        return {}
    return {prefix + k: (str(list(v)) if isinstance(v, (list, tuple)) else v)
            for k, v in values.items()}


def find_runs(sweep_dir: Path) -> list[dict]:
    """Every run directory of the sweep as a row; one the last sweep refused (it holds another
    config's run, :func:`roadmap.rundir.refusals`) is a ``refused`` row with the reason, never
    that other run's numbers."""
    refused = refusals(sweep_dir)
    runs = []
    for run in find_run_dirs(sweep_dir):
        row = read_run(run)
        reason = refused.get(str(run.path.relative_to(sweep_dir)))
        if reason is not None:
            row = {"run_dir": row["run_dir"], **run.identity_from_name(), "status": "refused",
                   "error": reason}
        if "step" in row or row["status"] == "corrupt":
            runs.append(row)
    return runs


# -- what the sweep asked for -------------------------------------------------------------------

def expected_runs(sweep_dir: Path) -> list[tuple[str, str, int]] | None:
    """(step, variant, seed) of every job in the sweep's ``multirun.yaml``; None if absent, a
    ValueError naming the file if it cannot be read as Hydra's."""
    path = Path(sweep_dir) / MULTIRUN
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        task = list(OmegaConf.load(path).hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception as exc:
        raise ValueError(f"{path} is unreadable ({_error(exc)})") from None
    axes = []
    for override in parsed:
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() \
            else [override.get_value_element_as_str()]
        axes.append([(key, v) for v in values])
    jobs = []
    defaults = {"seed": "0"}
    for combo in itertools.product(*axes):
        values = {**defaults, **dict(combo)}
        if "step" not in values:
            continue
        name = variant(f"{k}={v}" for k, v in combo)
        jobs.append((values["step"], name, int(values["seed"])))
    return jobs


# -- the tables ---------------------------------------------------------------------------------

def _mean(records: list[dict], key: str) -> float:
    values = [r[key] for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else math.nan


def _ladder_of(runs: list[dict]) -> dict:
    ladders = sorted({r["ladder"] for r in runs if r.get("ladder")}) or ["resnet50"]
    return {s.name: s for s in ladder_steps(ladders[0] if ladders[0] in LADDERS else "resnet50")}


def _problems(seeds: set[int], seen: dict[int, dict]) -> list[str]:
    problems = []
    for s in sorted(seeds):
        r = seen.get(s)
        if r is None:
            problems.append(f"seed {s} missing")
        elif r["status"] != "completed":
            why = f": {r['error'][:120]}" if r.get("error") else ""
            problems.append(f"seed {s} {r['status']}{why}")
    return problems


def _row(step: str, name: str, info, seeds: set[int], seen: dict[int, dict]) -> dict:
    """One (step, variant) row: its completed seeds' statistics and its problems."""
    done = [seen[s] for s in sorted(seeds) if s in seen and seen[s]["status"] == "completed"]
    top1 = pd.Series([r["top1"] for r in done], dtype=float)
    n = len(done)
    std = top1.std(ddof=1) if n > 1 else math.nan
    problems = _problems(seeds, seen)
    flags = next((r for r in done if any(k.startswith(MODEL_PREFIX) for k in r)), {})
    return {
        "index": info.index if info else "", "step": step, "variant": name,
        "adopted": info.adopted if info else None, "parent": info.parent if info else None,
        "n": n, "n_expected": len(seeds),
        "val_top1_mean": _mean(done, "val_top1"),
        "val_top1_std": (pd.Series([r.get("val_top1") for r in done], dtype=float).std(ddof=1)
                         if n > 1 else math.nan),
        "top1_mean": top1.mean() if n else math.nan,
        "top1_std": std, "top1_ci95": t_interval(std, n),
        "top5_mean": _mean(done, "top5"), "params": done[0]["params"] if done else None,
        "gflops": done[0]["gflops"] if done else None,
        "train_images_per_s": _mean(done, "train_images_per_s"), "wall_s": _mean(done, "wall_s"),
        "paper_top1": info.paper_top1 if info else None,
        "paper_gflops": info.paper_gflops if info else None,
        "status": "ok" if not problems else "; ".join(problems),
        **{k: v for k, v in flags.items() if k.startswith((MODEL_PREFIX, PROTOCOL_PREFIX))},
    }


def _deltas(table: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Each row's change against its parent step (same variant, else the plain step)."""
    deltas, cis = [], []
    index = {(r["step"], r["variant"]): r for r in table.to_dict("records")}
    for r in table.to_dict("records"):
        p = index.get((r["parent"], r["variant"])) or index.get((r["parent"], ""))
        if p is None or not r["n"] or not p["n"]:
            deltas.append(math.nan)
            cis.append(math.nan)
            continue
        deltas.append(r["top1_mean"] - p["top1_mean"])
        cis.append(welch_interval(r["top1_mean"], r["top1_std"], r["n"], p["top1_mean"],
                                  p["top1_std"], p["n"]))
    return deltas, cis


def summarise(runs: list[dict], expected: list[tuple[str, str, int]] | None) -> pd.DataFrame:
    """One row per (step, variant), in ladder order: seeds, mean, std, intervals, change
    against the parent, the model's flags."""
    valid = [r for r in runs if "step" in r]
    steps = _ladder_of(valid)
    order = list(steps)
    by_key: dict[tuple[str, str], dict[int, dict]] = {}
    for r in valid:
        by_key.setdefault((r["step"], r.get("variant", "")), {})[r["seed"]] = r
    wanted: dict[tuple[str, str], set[int]] = {}
    for step, name, seed in expected or []:
        wanted.setdefault((step, name), set()).add(seed)
    for key, seeds in by_key.items():
        wanted.setdefault(key, set()).update(seeds)
    rows = [_row(step, name, steps.get(step), seeds, by_key.get((step, name), {}))
            for (step, name), seeds in wanted.items()]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_order"] = [(order.index(r["step"]) if r["step"] in order else len(order),
                        r["variant"]) for r in rows]
    table = table.sort_values("_order").drop(columns="_order").reset_index(drop=True)
    deltas, cis = _deltas(table)
    table.insert(table.columns.get_loc("top1_ci95") + 1, "delta_top1", deltas)
    table.insert(table.columns.get_loc("delta_top1") + 1, "delta_ci95", cis)
    pooled = _pooled(table)
    for offset, column in enumerate(("delta_pooled_ci95", "delta_p_pooled")):
        table.insert(table.columns.get_loc("delta_ci95") + 1 + offset, column, pooled[column])
    return table


def _pooled(table: pd.DataFrame) -> dict[str, list[float]]:
    """Each change's 95% half-width and p-value from the seed std pooled over the steps of its
    variant (experiments/protocol.md, amendment 3); the Welch interval stays beside it."""
    groups = {name: pooled_std(list(g["top1_std"]), list(g["n"]))
              for name, g in table.groupby("variant", sort=False)}
    index = {(r["step"], r["variant"]): r for r in table.to_dict("records")}
    half, p = [], []
    for r in table.to_dict("records"):
        parent = index.get((r["parent"], r["variant"])) or index.get((r["parent"], ""))
        std, df = groups[r["variant"]]
        h, pv = ((math.nan, math.nan) if parent is None or not r["n"] or not parent["n"] else
                 pooled_change(r["delta_top1"], std, df, r["n"], parent["n"]))
        half.append(h)
        p.append(pv)
    return {"delta_pooled_ci95": half, "delta_p_pooled": p}


def _fmt(value, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return pattern.format(value)


def to_markdown(table: pd.DataFrame, runs: list[dict], sweep_dir: Path,
                notes: list[str] = ()) -> str:
    head = [f"# Results: {sweep_dir}", "", *[f"Note: {n}\n" for n in notes]]
    if table.empty:
        return "\n".join([*head, f"No runs found in {sweep_dir}.", ""])
    show = pd.DataFrame({
        "#": table["index"], "step": table["step"],
        "variant": table["variant"],
        "seeds": [f"{n}/{e}" for n, e in zip(table["n"], table["n_expected"], strict=True)],
        "val top-1 %": [mean_std(m, s, n) for m, s, n in zip(
            table["val_top1_mean"], table["val_top1_std"], table["n"], strict=True)],
        "top-1 %": [mean_std(m, s, n) for m, s, n in zip(
            table["top1_mean"], table["top1_std"], table["n"], strict=True)],
        "95% CI": [_fmt(c, "± {:.2f}") for c in table["top1_ci95"]],
        "vs parent": [change(d, c) for d, c in zip(table["delta_top1"], table["delta_ci95"],
                                                   strict=True)],
        "params": [_fmt(p, "{:,.0f}") for p in table["params"]],
        "GFLOPs": [_fmt(g, "{:.4f}") for g in table["gflops"]],
        "train img/s": [_fmt(t, "{:.0f}") for t in table["train_images_per_s"]],
        "wall s": [_fmt(w, "{:.0f}") for w in table["wall_s"]],
        "paper top-1": [_fmt(p, "{:.2f}") for p in table["paper_top1"]],
        "paper GFLOPs": [_fmt(p, "{:.2f}") for p in table["paper_gflops"]],
        "status": table["status"],
    })
    if not any(table["variant"]):
        show = show.drop(columns="variant")
    lines = [*head, f"Made by {made_by(runs)}.", "",
             "Validation top-1 (held out of the training set; what choices are made on) and "
             "test top-1 (reported only), mean ± std over seeds; the test top-1's 95% CI of "
             "the mean (t) and change against the parent step (the adopted step it builds on) "
             "with its 95% Welch interval. GFLOPs "
             "of the trained network at its resolution; the paper's columns are ImageNet at "
             "224 (Table 10).", "", show.to_markdown(index=False, disable_numparse=True), ""]
    bad = [r for r in runs if r["status"] not in ("completed",)]
    if bad:
        lines += ["## Runs that did not complete", ""]
        lines += [f"- `{r['run_dir']}`: {r['status']}" + (f" ({r['error']})" if r.get("error")
                                                           else "") for r in bad]
        lines.append("")
    wall = sum(r.get("wall_s") or 0 for r in runs if r["status"] == "completed")
    lines.append(f"{sum(r['status'] == 'completed' for r in runs)} runs completed, "
                 f"{wall / 60:.1f} min of training wall time in all.")
    return "\n".join(lines) + "\n"


def collect(sweep_dir: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} not found; run `make roadmap` or "
                                "pass the hydra.sweep.dir of a sweep")
    out = Path(out) if out else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # never leave a previous sweep's tables looking like this one's
        (out / name).unlink(missing_ok=True)
    notes = []
    try:
        try:
            expected = expected_runs(sweep_dir)
        except ValueError as exc:
            expected = None
            notes.append(f"{exc}; the table lists the runs found, not the runs asked for")
        runs = find_runs(sweep_dir)
        table = summarise(runs, expected)
    except Exception as exc:
        (out / "results.md").write_text(f"# Results: {sweep_dir}\n\nNo table: collecting "
                                        f"failed ({_error(exc)}).\n")
        raise
    table.to_csv(out / "results.csv", index=False)
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    (out / "results.md").write_text(to_markdown(table, runs, sweep_dir, notes))
    for note in notes:
        print(f"roadmap.results.collect: {note}", file=sys.stderr)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", help="where to write the tables (default: the sweep directory)")
    args = parser.parse_args(argv)
    try:
        table = collect(args.sweep_dir, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or args.sweep_dir)
    complete = int((table["status"] == "ok").sum()) if not table.empty else 0
    print(f"roadmap.results.collect: {complete}/{len(table)} rows complete -> {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
