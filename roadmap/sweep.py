"""``make roadmap``: every step of a ladder as one Hydra multirun of ``roadmap.train``, then its
tables (``roadmap.results.collect``).

    python -m roadmap.sweep OUT [--preset cpu] [--seeds 0,1] [--ladder resnet50] [--steps a,b]
                            [-- overrides]

The sweep runs in its own process group and dies with this process; this process dies with its
parent (Linux's parent-death signal), so killing ``make`` alone, or this process, stops every
run of the sweep (each resumes from its checkpoint when rerun) and never leaves one running
orphaned. While it runs, one line per run says where it is (:class:`Watch`: run i of N, the
step, an estimate of the time left), whether or not stderr is a terminal. Whenever the sweep
ends, however it ends, the tables are written for what finished; then the ladder table is
printed and its figures are written beside it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from roadmap.ladder import step_names

# torch, pandas and scipy (through roadmap.rundir and roadmap.results) are imported once the
# sweep has started: its own process imports them meanwhile, on the other core

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


def sweep_command(out: str, preset: str, seeds: str, ladder: str,
                  overrides: Sequence[str], steps: Sequence[str] | None = None) -> list[str]:
    """The ladder's steps (or ``steps`` of it) x ``seeds`` as one Hydra multirun into ``out``."""
    steps = list(steps or step_names(ladder))
    return [sys.executable, "-m", "roadmap.train", "--multirun",
            f"step={','.join(steps)}", f"seed={seeds}", f"preset={preset}",
            f"ladder={ladder}", f"hydra.sweep.dir={out}", *overrides]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class Watch:
    """Where a sweep is, read from its run directories: a line when a run starts or ends (run
    i of N, the step and seed, how it ended, the time left at the pace of this sweep's runs)."""

    def __init__(self, out: Path) -> None:
        self.out, self.started = Path(out), time.time()
        self.seen: dict[tuple, str] = {}
        self.jobs: list[tuple[str, str, int]] | None = None
        self.trained = 0
        """Runs this sweep ended (not the ones it found finished): the pace of the time left."""

    def _state(self, run) -> tuple[str, object]:
        """The run's state and its record (None until it ended)."""
        from roadmap.rundir import CorruptRecord

        try:
            record = run.read_record()
        except CorruptRecord:
            return "corrupt", None
        if record is not None:
            return record.status, record
        return ("running" if run.started_after(self.started) else "waiting"), None

    def poll(self) -> list[str]:
        """The lines for what changed since the last poll."""
        from roadmap.results.collect import expected_runs
        from roadmap.rundir import RunDir, refusals, subdir

        if self.jobs is None:
            try:
                self.jobs = expected_runs(self.out)
            except ValueError:  # being written
                return []
            if self.jobs is None:  # Hydra has not written multirun.yaml yet
                return []
        first, lines = not self.seen, []
        refused = refusals(self.out, self.started)
        for step, name, seed in self.jobs:
            where = subdir(step, name, seed)
            run = RunDir(self.out / where)
            key = (step, name, seed)
            state, record = ("refused", None) if where in refused else self._state(run)
            if state == self.seen.get(key) or state == "waiting":
                continue
            self.seen[key] = state
            if state not in ("running", "refused") and not run.ended_after(self.started):
                continue  # finished before this sweep began: counted, not announced
            self.trained += state != "running"
            lines.append(self._line(step, name, seed, state, record))
        done = sum(s == "completed" for s in self.seen.values())
        if first and done and not lines:
            rest = "nothing to run" if done == len(self.jobs) else "running the rest"
            lines.append(f"roadmap.sweep: {done} of {len(self.jobs)} runs already completed; "
                         f"{rest}")
        return lines

    def _line(self, step: str, name: str, seed: int, state: str, record) -> str:
        total = len(self.jobs)
        ended = sum(s != "running" for s in self.seen.values())
        label = f"{step}{' (' + name + ')' if name else ''} seed {seed}"
        if state == "running":
            return f"roadmap.sweep: [{ended + 1}/{total}] {label}: running"
        result = f", top-1 {record.top1:.2f}" if record is not None and record.top1 else ""
        elapsed = time.time() - self.started
        left = elapsed / max(self.trained, 1) * (total - ended)
        return (f"roadmap.sweep: [{ended}/{total}] {label}: {state}{result}; "
                f"{_minutes(elapsed)} so far, about {_minutes(left)} left")


def watch(out: Path, proc: subprocess.Popen, every: float = 1.0) -> None:
    """Print the sweep's progress lines until ``proc`` ends."""
    progress = Watch(out)
    while proc.poll() is None:
        for line in progress.poll():
            print(line, file=sys.stderr, flush=True)
        time.sleep(every)
    for line in progress.poll():
        print(line, file=sys.stderr, flush=True)


def run_sweep(command: list[str], out: Path | None = None) -> int:
    """Run the sweep as a process group (its progress watched in ``out`` when given); a
    SIGTERM, SIGINT or SIGHUP here stops the group. Stopped by a signal, here or in the sweep's
    own process, it returns 128 + the signal's number, so that callers stop too."""
    proc = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent)
    stopped = []

    def stop(signum, frame) -> None:
        stopped.append(signum)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    if out is not None:
        watch(out, proc)
    code = proc.wait()
    if not stopped and code < 0:  # the sweep itself was killed (e.g. SIGTERM to its process)
        stopped.append(-code)
    if stopped:
        print(f"roadmap.sweep: stopped by signal {stopped[0]}; rerun the same command to "
              "resume", file=sys.stderr)
        return 128 + stopped[0]
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a ladder as one sweep, then its tables")
    parser.add_argument("out", help="the sweep folder (hydra.sweep.dir)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--ladder", default="resnet50")
    parser.add_argument("--steps", default=None, help="a,b,c of the ladder (default: all)")
    args, overrides = parser.parse_known_args(argv)  # the rest: Hydra overrides
    overrides = [o for o in overrides if o != "--"]
    die_with_parent()
    try:
        steps = args.steps.split(",") if args.steps else None
        command = sweep_command(args.out, args.preset, args.seeds, args.ladder, overrides, steps)
    except ValueError as exc:  # an unknown ladder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = run_sweep(command, Path(args.out))
    if not Path(args.out).is_dir():  # the sweep did not start (Hydra said why)
        return status or 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tables are written, even on a 2nd Ctrl-C
    if report(Path(args.out)) != 0:
        status = status or 1
    if status:
        print(f"make roadmap: some runs failed or were stopped; see {args.out}/results.md",
              file=sys.stderr)
    return status


def report(out: Path) -> int:
    """The sweep's tables (:mod:`roadmap.results.collect`), the ladder table printed, and its
    figures beside it (:mod:`roadmap.results.plots`)."""
    from roadmap.results.collect import main as collect
    from roadmap.results.plots import main as plots

    code = collect([str(out)])
    if code != 0:
        return code
    import pandas as pd

    print(ladder_table(pd.read_csv(out / "results.csv", keep_default_na=False,
                                   na_values=[""])))
    return plots([str(out / "results.csv")])


def ladder_table(table) -> str:
    """The ladder as the terminal shows it at the end of a sweep: each step's test top-1, its
    change against its parent, the paper's top-1, its status."""
    import pandas as pd

    from roadmap.results.text import change, mean_std

    if table.empty:
        return "(no runs)"
    steps = [f"{i} {s}" for i, s in zip(table["index"], table["step"], strict=True)]
    shown = pd.DataFrame({
        "step": [s.ljust(max(map(len, steps))) for s in steps],
        "seeds": [f"{n}/{e}" for n, e in zip(table["n"], table["n_expected"], strict=True)],
        "top-1 %": [mean_std(m, s, n) for m, s, n in zip(
            table["top1_mean"], table["top1_std"], table["n"], strict=True)],
        "vs parent": [change(d, c) for d, c in zip(table["delta_top1"], table["delta_ci95"],
                                                   strict=True)],
        "paper": [f"{p:.2f}" if p == p else "" for p in table["paper_top1"]],
        "status": table["status"]})
    return shown.to_string(index=False)


if __name__ == "__main__":
    sys.exit(main())
