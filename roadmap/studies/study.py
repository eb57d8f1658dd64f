"""The rules of experiments/protocol.md's amendment 3 that choose the ``study`` preset, computed
from run directories (validation top-1 and wall times only; nothing is typed by hand):

    python -m roadmap.studies.study length SWEEP --reference RUNS_CSV [--out DIR]
    python -m roadmap.studies.study geometry SWEEP --length JSON [--run] [--out DIR]
    python -m roadmap.studies.study preset --length JSON --geometry JSON [--write]
    python -m roadmap.studies.study budget SWEEP --time FILE [--out DIR]

``length`` (rule 3): ``SWEEP`` holds step 0 and the ``recipe`` step at E = 2, 4, 8, 16, 32
epochs (``python -m roadmap.sweep SWEEP --steps resnet50,recipe --seeds 0,1,2 -- epochs=2,4,8,
16,32``). The chosen length is the shortest E whose doubling adds less than 0.3 points of mean
validation top-1 to both steps, or the longest E whose whole ladder fits the budget (rule 1),
whichever is shorter. The ladder's time at E is predicted from ``RUNS_CSV``, the ``runs.csv`` of
one seed of the ladder at the same size (each run's ``wall_s`` scaled by E over its epochs, plus
the sweep's own overhead, :data:`OVERHEAD_S`).

``geometry`` (rule 4): with ``--run``, first the check itself, resumable: the steps whose
mechanism depends on the map size and their parents (:data:`GEOMETRY_STEPS`) at the chosen
length, seeds 0-2, at 64x64 (``SWEEP/64``) and 32x32 (``SWEEP/32``). Then the rule: 64x64 if
the whole ladder at 64x64 is predicted to fit the budget (each step's measured ``wall_s`` at
64x64, the nearest checked step's for the others), else 32x32; and the check's changes with
their pooled intervals at both sizes, whatever they show (its accuracies do not enter the
choice).

``preset``: the ``study`` preset the two rules chose (``conf/preset/study.yaml``: the ``cpu``
preset at the chosen length and size, under the study's own selected protocol once rule 5 has
written ``conf/protocol/study.yaml``, the ``cpu`` protocol until then).

``budget`` (rule 1 measured, and rule 9): ``SWEEP`` holds one seed of the whole ladder at the
study preset, trained by the sweep that ``/usr/bin/time -f %e -o FILE`` timed (`make
study-budget`). Its wall time against the budget (45 minutes) and against the 15 minutes a seed
of the default ladder may take (rule 9: the study becomes the default only if it fits them).
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


# -- rule 4: geometry ---------------------------------------------------------------------------

GEOMETRY_STEPS = ("stage_ratio", "patchify_stem", "inverted_bottleneck", "move_up_dwconv",
                  "kernel_5", "kernel_7", "kernel_9", "kernel_11", "layer_norm",
                  "separate_downsampling")
"""The steps whose mechanism depends on the map size, and their parents (rule 4)."""
SIZES = (64, 32)
"""The check's sizes, the larger first: the rule reads its times."""
BASE_SIZE = 32


def size_overrides(size: int, padding: int = 0) -> list[str]:
    """Fashion-MNIST at ``size``: 28x28 scaled by size/32 and padded to ``size`` (the same 1/8
    border as 28 -> 32), the crop padding scaled alike."""
    if size == BASE_SIZE:
        return []
    factor = size // BASE_SIZE
    return [f"data.resize={factor}", f"data.image_size={size}",
            *([f"data.padding={padding * factor}"] if padding else [])]


def run_geometry_check(sweep: Path, epochs: int, seeds: str = "0,1,2",
                       preset: str = "cpu") -> int:
    """The check's two sweeps (resumable), each followed by its tables; the worst exit code."""
    from roadmap.conf import compose
    from roadmap.sweep import report, run_sweep, sweep_command

    padding = int(compose(["step=resnet50", f"preset={preset}"]).data.padding)
    status = 0
    for size in SIZES:
        out = sweep / str(size)
        command = sweep_command(str(out), preset, seeds, "resnet50",
                                [f"epochs={epochs}", *size_overrides(size, padding)],
                                GEOMETRY_STEPS)
        code = run_sweep(command, out)
        if out.is_dir():
            report(out)
        if code >= 128:  # stopped by a signal: stop here too (rerunning resumes)
            return code
        status = code or status
    return status


def nearest_step(step: str, ran: Sequence[str], order: Sequence[str]) -> str:
    """The step of ``ran`` nearest to ``step`` in the ladder's ``order`` (ties: the earlier)."""
    return min(ran, key=lambda s: (abs(order.index(s) - order.index(step)), order.index(s)))


def predicted_ladder_minutes(runs: list[dict], order: Sequence[str]) -> float:
    """One seed of the whole ladder, predicted from ``runs`` (completed runs of some of its
    steps, at the length and size predicted): each step's mean ``wall_s``, the nearest run
    step's for the others, plus :data:`OVERHEAD_S`."""
    walls: dict[str, list[float]] = {}
    for r in runs:
        if r.get("status") == "completed":
            walls.setdefault(r["step"], []).append(float(r["wall_s"]))
    if not walls:
        raise ValueError("no completed run to predict the ladder's time from")
    ran = [s for s in order if s in walls]
    mean = {s: sum(v) / len(v) for s, v in walls.items()}
    return (sum(mean[nearest_step(s, ran, order)] for s in order) + OVERHEAD_S) / 60


def unfinished(runs: list[dict], steps: Sequence[str], seeds: int = 3) -> list[str]:
    """The check's (step, size) pairs whose runs have not all finished."""
    finished = ("completed", "failed", "diverged")
    return [s for s in steps
            if sum(r.get("step") == s and r.get("status") in finished for r in runs) < seeds]


def choose_size(runs_by_size: dict[int, list[dict]], order: Sequence[str],
                budget: float = BUDGET_MIN * (1 - LEFT_FOR_SLOWER)) -> dict:
    """Rule 4: the larger size if its whole ladder is predicted to fit ``budget`` minutes."""
    minutes = {size: round(predicted_ladder_minutes(runs, order), 1)
               for size, runs in runs_by_size.items()}
    large = max(minutes)
    fits = minutes[large] <= budget
    return {"image_size": large if fits else BASE_SIZE,
            "resize": large // BASE_SIZE if fits else 1,
            "rule": (f"{large}x{large} fits the budget" if fits else
                     f"{large}x{large} does not fit the budget"),
            "predicted_minutes": minutes, "budget_minutes": round(budget, 1)}


def check_changes(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """The check's changes (steps whose parent it ran) at each size: the change of test top-1
    against the parent with its pooled and Welch 95% half-widths, the seeds."""
    rows = {}
    for size, table in tables.items():
        for r in table.to_dict("records"):
            if not isinstance(r.get("delta_top1"), float) or math.isnan(r["delta_top1"]):
                continue
            row = rows.setdefault(r["step"], {"step": r["step"], "parent": r["parent"]})
            row.update({f"delta_{size}": r["delta_top1"],
                        f"pooled_ci95_{size}": r["delta_pooled_ci95"],
                        f"welch_ci95_{size}": r["delta_ci95"], f"n_{size}": r["n"]})
    return pd.DataFrame(list(rows.values()))


def geometry_rule(sweep: Path, out: Path) -> dict:
    """Rule 4 from the check under ``sweep``: the choice, written with the check's changes to
    ``out/geometry-rule.{json,md}``."""
    from roadmap.ladder import step_names
    from roadmap.results.collect import expected_runs, summarise

    runs = {size: find_runs(sweep / str(size)) if (sweep / str(size)).is_dir() else []
            for size in SIZES}
    missing = [f"{s} at {size}x{size}" for size in SIZES
               for s in unfinished(runs[size], GEOMETRY_STEPS)]
    if missing:
        raise ValueError(f"the geometry check in {sweep} is not finished ({', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}); rerun make study-geometry")
    choice = choose_size(runs, step_names())
    changes = check_changes({size: summarise(runs[size], expected_runs(sweep / str(size)))
                             for size in SIZES})
    out.mkdir(parents=True, exist_ok=True)
    for size in SIZES:  # every run's row
        pd.DataFrame(runs[size]).to_csv(out / f"geometry-runs-{size}.csv", index=False)
    (out / "geometry-rule.json").write_text(json.dumps(
        {**choice, "changes": changes.to_dict("records")}, indent=1, default=str) + "\n")
    (out / "geometry-rule.md").write_text(geometry_markdown(choice, changes, sweep))
    return choice


def geometry_markdown(choice: dict, changes: pd.DataFrame, sweep: Path) -> str:
    from roadmap.results.text import change

    lines = ["# Rule 4: the study's image size (experiments/protocol.md, amendment 3)", "",
             f"Computed by `python -m roadmap.studies.study geometry {sweep}` from the check's "
             "runs. Each change of test top-1 against its parent, with its 95% interval from "
             "the seed std pooled over the check's steps at that size (reported only; the "
             "accuracies do not enter the choice).", "",
             "| change | parent | " + " | ".join(f"{s}x{s} (pooled)" for s in SIZES) + " | "
             + " | ".join(f"{s}x{s} (Welch)" for s in SIZES) + " |",
             "|---|---|" + "---:|" * (2 * len(SIZES))]
    for r in changes.to_dict("records"):
        cells = [change(r.get(f"delta_{s}", math.nan), r.get(f"pooled_ci95_{s}", math.nan))
                 for s in SIZES] + [change(r.get(f"delta_{s}", math.nan),
                                           r.get(f"welch_ci95_{s}", math.nan)) for s in SIZES]
        lines.append(f"| {r['step']} | {r['parent']} | " + " | ".join(cells) + " |")
    minutes = ", ".join(f"{s}x{s}: {m} min" for s, m in choice["predicted_minutes"].items())
    lines += ["", f"Predicted ladder (one seed): {minutes}; budget {choice['budget_minutes']} "
                  f"min. Chosen: {choice['image_size']}x{choice['image_size']} "
                  f"({choice['rule']})."]
    return "\n".join(lines) + "\n"


# -- the preset ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "conf" / "preset" / "study.yaml"
STUDY_PROTOCOL = ROOT / "conf" / "protocol" / "study.yaml"


def preset_yaml(length: dict, geometry: dict, protocol: str) -> str:
    """``conf/preset/study.yaml``: the cpu preset at the length and size the rules chose."""
    size, resize = int(geometry["image_size"]), int(geometry["resize"])
    return (
        "# @package _global_\n"
        "# Written by `python -m roadmap.studies.study preset --write` from the rules of\n"
        "# experiments/protocol.md, amendment 3 (results/study/): the cpu preset at\n"
        f"# {length['epochs']} epochs (rule 3: {length['rule']}) and {size}x{size} (rule 4: "
        f"{geometry['rule']}),\n"
        + ("# under the study's protocol, selected by rule 5 (conf/protocol/study.yaml).\n"
           if protocol == "study" else
           "# under the cpu protocol until rule 5 selects the study's (make study-grid).\n")
        + "defaults:\n  - cpu\n  - _self_\n"
        f"  - override /protocol: {protocol}\n"
        f"preset_name: study\nepochs: {int(length['epochs'])}\n"
        f"data:\n  image_size: {size}\n  resize: {resize}\n")


def write_preset(length_json: Path, geometry_json: Path, write: bool) -> str:
    for path in (length_json, geometry_json):
        if not path.is_file():
            raise ValueError(f"{path} not found: run make study-length and make "
                             "study-geometry first")
    length, geometry = (json.loads(p.read_text()) for p in (length_json, geometry_json))
    if length.get("epochs") is None:
        raise ValueError(f"{length_json} chose no length ({length.get('rule')})")
    text = preset_yaml(length, geometry, "study" if STUDY_PROTOCOL.is_file() else "cpu")
    if write:
        PRESET.write_text(text)
    return text


def length_rule(sweep: Path, reference: Path, out: Path) -> dict:
    """Rule 3 from the length study under ``sweep``, written to ``out/length-rule.{json,md}``."""
    runs = find_runs(sweep)
    table = validation_by_length(runs)
    if not table["complete"].all():
        short = table[~table["complete"]]
        raise ValueError(f"the length study in {sweep} is not complete ("
                         + ", ".join(f"{r['step']} at {r['epochs']}: {r['n']} of 3 seeds"
                                     for r in short.to_dict("records")[:4])
                         + (" ..." if len(short) > 4 else "")
                         + "); rerun make study-length to finish it")
    ref = pd.read_csv(reference)
    choice = choose_length(table, ref)
    done = ref[ref["status"] == "completed"]
    choice["reference"] = {"runs": int(len(done)), "wall_s": round(float(done["wall_s"].sum()), 1),
                           "epochs": sorted({int(e) for e in done["epochs"]}),
                           "commits": sorted({str(c) for c in done.get("commit", [])})}
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(runs).to_csv(out / "length-runs.csv", index=False)  # every run's row
    (out / "length-rule.json").write_text(json.dumps(
        {**choice, "validation": table.to_dict("records")}, indent=1) + "\n")
    (out / "length-rule.md").write_text(
        "# Rule 3: the study's length (experiments/protocol.md, amendment 3)\n\n"
        + f"Computed by `python -m roadmap.studies.study length {sweep} --reference "
          f"{reference}` from the runs' validation top-1 (mean of 3 seeds).\n\n"
        + table.to_markdown(index=False, floatfmt=".2f") + "\n\n"
        + f"Reference: {choice['reference']['runs']} runs of the cpu ladder, "
          f"{choice['reference']['wall_s']} s of runs (commit "
          f"{', '.join(choice['reference']['commits'])}). "
        + "Predicted ladder, one seed: " + ", ".join(
            f"{e} epochs {m} min" for e, m in choice.get("predicted_minutes", {}).items())
        + f".\n\nChosen: {choice['epochs']} epochs ({choice['rule']}; converged at "
          f"{choice['converged']}, the budget allows {choice['budget']}).\n")
    return choice


# -- rule 1 measured at the study preset, and rule 9 ----------------------------------------------

DEFAULT_MIN = 15.0
"""Rule 9: one seed of the default ladder (`make roadmap`) takes at most this many minutes."""


def measured_budget(runs: list[dict], wall_s: float, order: Sequence[str]) -> dict:
    """One timed seed of the whole ladder (``runs``: its rows, seed 0) against the budget
    (rule 1) and the default's 15 minutes (rule 9)."""
    seed0 = [r for r in runs if r.get("seed") == 0]
    done = {r["step"] for r in seed0 if r.get("status") == "completed"}
    missing = [s for s in order if s not in done]
    if missing:
        raise ValueError(f"the timed ladder is not complete ({len(missing)} of {len(order)} "
                         f"steps missing: {', '.join(missing[:4])}); rerun make study-budget")
    runs_s = sum(float(r["wall_s"]) for r in seed0 if r.get("status") == "completed")
    if runs_s > wall_s:
        raise ValueError(f"the timed sweep ({wall_s:.0f} s) did not train its {runs_s:.0f} s of "
                         "runs itself (some were there before): time it into an empty folder")
    minutes = wall_s / 60
    return {"wall_minutes": round(minutes, 1), "runs_minutes": round(runs_s / 60, 1),
            "budget_minutes": BUDGET_MIN, "fits_budget": minutes <= BUDGET_MIN,
            "default_minutes": DEFAULT_MIN, "becomes_default": minutes <= DEFAULT_MIN,
            "commits": sorted({str(r.get("commit")) for r in seed0}),
            "machine": sorted({f"{r.get('cpu_model')}, {r.get('threads')} threads"
                               for r in seed0})}


def budget_rule(sweep: Path, time_file: Path, out: Path) -> dict:
    """Rule 1 measured and rule 9, written to ``out/budget-rule.{json,md}``."""
    from roadmap.ladder import step_names

    try:
        wall_s = float(time_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        raise ValueError(f"{time_file} holds no time in seconds (/usr/bin/time -f %e -o "
                         f"{time_file} ...)") from None
    runs = find_runs(sweep)
    result = measured_budget(runs, wall_s, step_names())
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([r for r in runs if r.get("seed") == 0]).to_csv(out / "budget-runs.csv",
                                                                 index=False)
    (out / "budget-rule.json").write_text(json.dumps(result, indent=1) + "\n")
    verdict = ("within" if result["fits_budget"] else "over") + " the budget; " + (
        "the study becomes `make roadmap`'s default" if result["becomes_default"] else
        f"over the default's {DEFAULT_MIN:.0f} minutes, so `make roadmap` stays the quick cpu "
        "ladder and the findings come from `make study`")
    (out / "budget-rule.md").write_text(
        "# Rules 1 and 9: one seed of the study's ladder, timed (experiments/protocol.md, "
        "amendment 3)\n\n"
        f"Computed by `python -m roadmap.studies.study budget {sweep} --time {time_file}` "
        "(`make study-budget`).\n\n"
        f"One seed of the whole ladder (17 runs) took **{result['wall_minutes']} min** "
        f"({result['runs_minutes']} min in its runs) on {'; '.join(result['machine'])}, commit "
        f"{', '.join(result['commits'])}: {verdict} (budget {BUDGET_MIN:.0f} min, default "
        f"{DEFAULT_MIN:.0f} min).\n")
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="amendment 3's rules, from the runs")
    sub = parser.add_subparsers(dest="rule", required=True)
    length = sub.add_parser("length", help="rule 3: the study's training length")
    length.add_argument("sweep", type=Path)
    length.add_argument("--reference", type=Path, required=True,
                        help="runs.csv of one seed of the ladder at the same size")
    length.add_argument("--out", type=Path, help="where to write length-rule.json/.md")
    geometry = sub.add_parser("geometry", help="rule 4: the study's image size")
    geometry.add_argument("sweep", type=Path)
    geometry.add_argument("--length", type=Path, required=True, help="length-rule.json")
    geometry.add_argument("--run", action="store_true", help="run the check first (resumes)")
    geometry.add_argument("--out", type=Path, help="where to write geometry-rule.json/.md")
    preset = sub.add_parser("preset", help="the study preset the rules chose")
    preset.add_argument("--length", type=Path, required=True, help="length-rule.json")
    preset.add_argument("--geometry", type=Path, required=True, help="geometry-rule.json")
    preset.add_argument("--write", action="store_true", help=f"write {PRESET.relative_to(ROOT)}")
    budget = sub.add_parser("budget", help="rules 1 and 9: one timed seed of the study ladder")
    budget.add_argument("sweep", type=Path)
    budget.add_argument("--time", type=Path, required=True, help="/usr/bin/time -f %%e's output")
    budget.add_argument("--out", type=Path, help="where to write budget-rule.json/.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.rule == "preset":
            text = write_preset(args.length, args.geometry, args.write)
            print(text if not args.write else
                  f"roadmap.studies.study: wrote {PRESET.relative_to(ROOT)}")
            return 0
        if args.rule == "budget":
            result = budget_rule(args.sweep, args.time, args.out or args.sweep)
            print(f"roadmap.studies.study: one seed {result['wall_minutes']} min (budget "
                  f"{BUDGET_MIN:.0f}: {'fits' if result['fits_budget'] else 'over'}; default "
                  f"{DEFAULT_MIN:.0f}: {'yes' if result['becomes_default'] else 'no'})")
            return 0
        if args.rule == "length":
            for path in (args.sweep, args.reference):
                if not path.exists():
                    raise ValueError(f"{path} not found")
            choice = length_rule(args.sweep, args.reference, args.out or args.sweep)
            print(f"roadmap.studies.study: length {choice['epochs']} epochs ({choice['rule']})"
                  f" -> {(args.out or args.sweep) / 'length-rule.md'}")
            return 0
        if not args.length.is_file():
            raise ValueError(f"{args.length} not found: run make study-length first")
        epochs = json.loads(args.length.read_text()).get("epochs")
        if epochs is None:
            raise ValueError(f"{args.length} chose no length")
        status = run_geometry_check(args.sweep, int(epochs)) if args.run else 0
        if status >= 128:
            return status
        choice = geometry_rule(args.sweep, args.out or args.sweep)
        print(f"roadmap.studies.study: {choice['image_size']}x{choice['image_size']} "
              f"({choice['rule']}) -> {(args.out or args.sweep) / 'geometry-rule.md'}")
        return status
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
