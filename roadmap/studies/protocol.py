"""The cpu protocol: its grid, the selection rule of ``experiments/protocol.md``, the robustness
sweeps.

    python -m roadmap.studies.protocol grid OUT [--seeds 0,1] [--preset cpu] [-- overrides]
    python -m roadmap.studies.protocol select OUT [--write]
    python -m roadmap.studies.protocol robustness OUT [--seeds 0,1,2] [--protocols a,b,c]
                                                      [-- overrides]

``grid`` runs the 24 grid runs as two resumable sweeps (step 0 over padding x schedule, the
``recipe`` step over padding x regularisers) and prints the selection. ``select`` reads
validation top-1 only, applies the rule and prints it; with ``--write`` (its documented product,
what ``make protocol`` does) it writes the selected protocol and the two alternatives to
``conf/protocol/``, ``experiments/protocol.json`` and the result section of
``experiments/protocol.md``. ``robustness`` runs the ladder under each protocol into
``OUT/<protocol>`` and writes the view across protocols (:mod:`roadmap.studies.robustness`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from roadmap.conf import CONF_DIR

PADDINGS = (0, 2, 4)
SCHEDULES = ("step", "cosine")
REGULARISERS = (True, False)
PAPER = (4, "step", True)
"""The paper's own choices, and the first published cpu ladder's protocol (``committed``)."""
TIE = 0.05
"""Scores within this many points of the best are ties (broken towards the paper's choices)."""
ROOT = CONF_DIR.parent
SELECTION_JSON = ROOT / "experiments" / "protocol.json"
PROTOCOL_MD = ROOT / "experiments" / "protocol.md"
MARKERS = ("<!-- selection:start -->", "<!-- selection:end -->")


@dataclass(frozen=True)
class Family:
    """Whose protocol a grid selects: the ``cpu`` preset's (``conf/protocol/cpu*.yaml``,
    ``experiments/protocol.json``) or another preset's at another length and size, e.g. the
    ``study`` (amendment 3, rule 5: ``conf/protocol/study*.yaml``,
    ``experiments/study-protocol.json``). Paddings are the grid's times ``factor`` (the image
    size over 32)."""

    name: str = "cpu"
    factor: int = 1

    @property
    def json(self) -> Path:
        return SELECTION_JSON if self.name == "cpu" else \
            SELECTION_JSON.with_name(f"{self.name}-protocol.json")

    @property
    def markers(self) -> tuple[str, str]:
        return MARKERS if self.name == "cpu" else \
            (f"<!-- {self.name}-selection:start -->", f"<!-- {self.name}-selection:end -->")


CPU = Family()


@dataclass(frozen=True)
class Point:
    """One grid point: padding, step-0 schedule, regularisers kept."""

    padding: int
    schedule: str
    regularisers: bool

    def key(self) -> tuple:
        return (self.padding, self.schedule, self.regularisers)

    def changes_from_paper(self) -> int:
        return sum(a != b for a, b in zip(self.key(), PAPER, strict=True))

    def label(self) -> str:
        return (f"padding {self.padding}, {self.schedule} schedule, regularisers "
                f"{'kept' if self.regularisers else 'off'}")


GRID = tuple(Point(*k) for k in itertools.product(PADDINGS, SCHEDULES, REGULARISERS))


def grid_sweeps(seeds: str, factor: int = 1) -> list[tuple[str, list[str]]]:
    """The grid as two sweeps (sub-folder, overrides): step 0 does not depend on the
    regularisers, the ``recipe`` step not on step 0's schedule."""
    paddings = ",".join(str(p * factor) for p in PADDINGS)
    return [("resnet50", ["step=resnet50", f"seed={seeds}", "protocol=grid",
                          f"data.padding={paddings}",
                          f"protocol.step0_schedule={','.join(SCHEDULES)}"]),
            ("recipe", ["step=recipe", f"seed={seeds}", "protocol=grid",
                        f"data.padding={paddings}", "protocol.regularisers=true,false"])]


# -- the rule -----------------------------------------------------------------------------------

FINISHED = ("completed", "failed", "diverged")


def _validation(runs: list[dict], step: str, match: dict) -> tuple[list[float], list[str], int]:
    """Validation top-1 of the completed runs of ``step`` whose protocol columns match, the
    problems (runs that failed or diverged) and how many runs finished at all."""
    chosen = [r for r in runs if r.get("step") == step
              and all(r.get(f"protocol.{k}") == v for k, v in match.items())]
    done = [r for r in chosen if r["status"] == "completed"
            and isinstance(r.get("val_top1"), (int, float))]
    problems = [f"{step} {match} seed {r.get('seed')}: {r['status']}" for r in chosen
                if r not in done]
    finished = sum(r["status"] in FINISHED for r in chosen)
    return [float(r["val_top1"]) for r in done], problems, finished


def score_grid(runs: list[dict], seeds: Sequence[int], factor: int = 1) -> list[dict]:
    """Every grid point's score (NaN when any of its runs is missing or did not complete);
    a point's padding is in the grid's units (the runs': times ``factor``)."""
    rows = []
    for point in GRID:
        padding = point.padding * factor
        step0, p0, f0 = _validation(runs, "resnet50", {"padding": padding,
                                                       "step0_schedule": point.schedule})
        recipe, p1, f1 = _validation(runs, "recipe", {"padding": padding,
                                                      "regularisers": point.regularisers})
        complete = len(step0) == len(seeds) and len(recipe) == len(seeds)
        s0 = sum(step0) / len(step0) if step0 else math.nan
        s1 = sum(recipe) / len(recipe) if recipe else math.nan
        rows.append({**asdict(point), "val_resnet50": s0, "val_recipe": s1,
                     "score": (s0 + s1) / 2 if complete else math.nan,
                     "runs": len(step0) + len(recipe), "problems": p0 + p1,
                     "unfinished": max(0, 2 * len(seeds) - f0 - f1)})
    return rows


def select(rows: list[dict]) -> dict:
    """The rule: the best eligible score; ties (within TIE) towards the paper's choices. Then
    the alternatives ``far`` and ``committed`` (the committed protocol, else the best other
    point that changes the padding or the regularisers: one that changes only step 0's schedule
    would train the other 16 steps exactly as the selection). Refuses while runs are unfinished
    (a failed or
    diverged run only makes its points ineligible)."""
    unfinished = sum(r["unfinished"] for r in rows)
    if unfinished:
        raise ValueError(f"the grid is not finished ({unfinished} run(s) missing or stopped "
                         "before their end); rerun `make protocol` (it resumes)")
    eligible = [r for r in rows if not math.isnan(r["score"])]
    if not eligible:
        raise ValueError("no grid point has all its runs completed; run the grid first")
    best = max(r["score"] for r in eligible)
    tied = [r for r in eligible if r["score"] >= best - TIE]
    chosen = min(tied, key=lambda r: (_point(r).changes_from_paper(), -r["padding"]))
    point = _point(chosen)
    far = Point(max(PADDINGS, key=lambda p: (abs(p - point.padding), p)),
                next(s for s in SCHEDULES if s != point.schedule), not point.regularisers)
    committed = Point(*PAPER)
    if committed in (point, far):  # the runner-up that changes more than step 0 (amendment)
        rest = [r for r in eligible if _point(r) not in (point, far)
                and (r["padding"], r["regularisers"]) != (point.padding, point.regularisers)]
        committed = _point(max(rest, key=lambda r: r["score"])) if rest else None
    return {"selected": point, "far": far, "committed": committed, "best_score": best,
            "tied": [_point(r) for r in tied]}


def _point(row: dict) -> Point:
    return Point(row["padding"], row["schedule"], row["regularisers"])


# -- what the selection writes ------------------------------------------------------------------

def protocol_yaml(name: str, point: Point, why: str, factor: int = 1) -> str:
    """A ``conf/protocol/<name>.yaml`` holding ``point`` (its padding times ``factor``)."""
    return (f"# @package _global_\n# Written by `python -m roadmap.studies.protocol select "
            f"--write` (experiments/protocol.md): {why}.\nprotocol:\n  name: {name}\n"
            f"  padding: ${{data.padding}}\n  step0_schedule: {point.schedule}\n"
            f"  regularisers: {str(point.regularisers).lower()}\n"
            f"data:\n  padding: {point.padding * factor}\n")


def selection_markdown(rows: list[dict], result: dict, command: str,
                       family: Family = CPU) -> str:
    """The result section of experiments/protocol.md: every point's score, the choice
    (paddings as the runs had them)."""
    lines = [f"Computed by `{command}` from the runs' validation top-1 (seeds "
             f"{result['seeds']}; commit {result['commit']}).", "",
             "| padding | step-0 schedule | regularisers | val resnet50 | val recipe | score |",
             "|---:|---|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: -r["score"] if not math.isnan(r["score"]) else 1e9):
        fmt = lambda v: "" if math.isnan(v) else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {r['padding'] * family.factor} | {r['schedule']} | "
                     f"{'kept' if r['regularisers'] else 'off'} | {fmt(r['val_resnet50'])} | "
                     f"{fmt(r['val_recipe'])} | {fmt(r['score'])} |")
    selected, far, committed = result["selected"], result["far"], result["committed"]
    second = second_name(committed, family)
    label = (lambda p: p.label()) if family.factor == 1 else \
        (lambda p: Point(p.padding * family.factor, p.schedule, p.regularisers).label())
    lines += ["", f"**Selected** (`protocol/{family.name}.yaml`): {label(selected)}; score "
                  f"{result['best_score']:.2f}."
              + (f" Tied within {TIE} points: {'; '.join(label(p) for p in result['tied'])}."
                 if len(result["tied"]) > 1 else ""),
              f"**Alternatives**: `{family.name}_far` = {label(far)}; `{second}` = "
              + (label(committed) if committed else "none (no eligible point left)") + "."]
    problems = [p for r in rows for p in r["problems"]]
    if problems:
        lines += ["", "Runs that did not complete: " + "; ".join(problems) + "."]
    return "\n".join(lines)


def second_name(point: Point | None, family: Family = CPU) -> str:
    """The second alternative's protocol name: ``cpu_committed`` when it is the committed
    protocol, else ``cpu_next`` (``study_...`` for the study's)."""
    return f"{family.name}_{'committed' if point == Point(*PAPER) else 'next'}"


def write_selection(rows: list[dict], result: dict, command: str, root: Path = ROOT,
                    family: Family = CPU) -> None:
    """The protocol files, the family's JSON and its section of protocol.md, below ``root``
    (the repository)."""
    folder = root / "conf" / "protocol"
    name = family.name
    files = {name: (result["selected"], f"the selection, the {name} preset's protocol"),
             f"{name}_far": (result["far"], "the alternative with every factor changed")}
    if result["committed"] is not None:
        files[second_name(result["committed"], family)] = (
            result["committed"], "the first published ladder's protocol" if
            result["committed"] == Point(*PAPER) else "the best other point that changes the "
            "padding or the regularisers (the committed protocol is the selection or far)")
    for file, (point, why) in files.items():
        (folder / f"{file}.yaml").write_text(protocol_yaml(file, point, why, family.factor))
    (root / family.json.relative_to(ROOT)).write_text(json.dumps({
        "rule": "experiments/protocol.md", "command": command, "seeds": result["seeds"],
        "padding_factor": family.factor,
        "commit": result["commit"], "grid": rows,
        "selected": asdict(result["selected"]), "far": asdict(result["far"]),
        "committed": asdict(result["committed"]) if result["committed"] else None,
        "protocols": list(files)}, indent=2, default=str) + "\n")
    markdown = root / PROTOCOL_MD.relative_to(ROOT)
    text = markdown.read_text()
    first, last = family.markers
    start, end = text.index(first) + len(first), text.index(last)
    markdown.write_text(text[:start] + "\n" + selection_markdown(rows, result, command, family)
                        + "\n" + text[end:])


# -- the commands -------------------------------------------------------------------------------

def _sweep(command: list[str]) -> int:
    from roadmap.sweep import run_sweep

    return run_sweep(command)


def family_of(preset: str) -> Family:
    """The protocol family a preset's grid selects: named after the preset, paddings scaled
    by its image size over 32."""
    from roadmap.conf import compose

    size = int(compose(["step=resnet50", f"preset={preset}"], check=False).data.image_size)
    return Family(preset, max(1, size // 32))


def run_grid(out: Path, seeds: str, preset: str, extra: Sequence[str]) -> int:
    """The grid's two sweeps (resumable), each followed by its tables."""
    from roadmap.results.collect import main as collect

    status = 0
    for sub, overrides in grid_sweeps(seeds, family_of(preset).factor):
        command = [sys.executable, "-m", "roadmap.train", "--multirun", *overrides,
                   f"preset={preset}", f"hydra.sweep.dir={out / sub}", *extra]
        code = _sweep(command)
        collect([str(out / sub)])
        if code >= 128:  # stopped by a signal: stop here too (rerunning resumes)
            return code
        status = code or status
    return status


def run_select(out: Path, seeds: Sequence[int], write: bool, root: Path = ROOT,
               family: Family = CPU) -> dict:
    """Score the grid from the runs under ``out``, apply the rule, print (and write) it."""
    from roadmap.results.collect import find_runs

    runs = find_runs(out)
    rows = score_grid(runs, seeds, family.factor)
    result = select(rows)
    commits = sorted({str(r.get("commit")) for r in runs if r["status"] == "completed"})
    result.update(seeds=",".join(map(str, seeds)), commit=", ".join(commits) or "unknown")
    command = (f"python -m roadmap.studies.protocol select {out} --seeds {result['seeds']}"
               + ("" if family == CPU else f" --preset {family.name}"))
    print(selection_markdown(rows, result, command, family))
    if write:
        write_selection(rows, result, command + " --write", root, family)
    return result


def preset_protocol(preset: str) -> str:
    from roadmap.conf import compose

    return str(compose(["step=resnet50", f"preset={preset}"]).protocol.name)


def run_robustness(out: Path, seeds: str, preset: str, protocols: Sequence[str],
                   extra: Sequence[str], steps: Sequence[str] | None = None,
                   own_seeds: str | None = None, intervals: str = "welch") -> int:
    """The ladder under each protocol into ``out/<protocol>`` (resumable; the preset's own
    protocol with ``own_seeds`` when given), then every table and the view across
    protocols."""
    from roadmap.results.collect import main as collect
    from roadmap.studies.robustness import main as view
    from roadmap.sweep import sweep_command

    own = preset_protocol(preset)
    status = 0
    for name in protocols:
        overrides = [*([] if name == own else [f"protocol={name}"]), *extra]
        command = sweep_command(str(out / name), preset,
                                own_seeds if own_seeds and name == own else seeds,
                                "resnet50", overrides, steps)
        code = _sweep(command)
        collect([str(out / name)])
        if code >= 128:  # stopped by a signal: stop here too (rerunning resumes)
            return code
        status = code or status
    return view([str(out), "--protocols", ",".join(protocols), "--intervals", intervals]) \
        or status


def default_protocols(family: Family = CPU) -> list[str]:
    if not family.json.is_file():
        raise ValueError(f"{family.json.relative_to(ROOT)} not found: run the {family.name} "
                         "grid and select --write first, or name the protocols with "
                         "--protocols a,b,c")
    return list(json.loads(family.json.read_text())["protocols"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the cpu protocol: grid, selection, robustness")
    parser.add_argument("command", choices=("grid", "select", "robustness"))
    parser.add_argument("out", type=Path, help="the folder of the runs")
    parser.add_argument("--seeds", default=None, help="default: 0,1 (grid), 0,1,2 (robustness)")
    parser.add_argument("--selected-seeds", default=None, help="robustness: the seeds of the "
                        "preset's own (selected) protocol (default: --seeds)")
    parser.add_argument("--preset", default="cpu", help="whose protocol: cpu (conf/protocol/"
                        "cpu*.yaml) or another preset's (e.g. study: study*.yaml)")
    parser.add_argument("--protocols", default=None, help="robustness: a,b,c (default: the "
                        "selection and its alternatives, experiments/protocol.json)")
    parser.add_argument("--write", action="store_true", help="select: write the selection")
    parser.add_argument("--steps", default=None, help="robustness: a,b,c of the ladder "
                        "(default: all)")
    parser.add_argument("--intervals", choices=("welch", "pooled"), default="welch",
                        help="robustness: the intervals of the view's verdicts")
    args, extra = parser.parse_known_args(argv)
    extra = [o for o in extra if o != "--"]
    seeds = args.seeds or ("0,1,2" if args.command == "robustness" else "0,1")
    try:
        seed_list = [int(s) for s in seeds.split(",")]
        family = CPU if args.preset == "cpu" else family_of(args.preset)
        if args.command == "grid":
            status = run_grid(args.out, seeds, args.preset, extra)
            run_select(args.out, seed_list, write=False, family=family)  # adopting: --write
            return status
        if args.command == "select":
            run_select(args.out, seed_list, args.write, family=family)
            return 0
        protocols = args.protocols.split(",") if args.protocols else default_protocols(family)
        steps = args.steps.split(",") if args.steps else None
        return run_robustness(args.out, seeds, args.preset, protocols, extra, steps,
                              args.selected_seeds, args.intervals)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
