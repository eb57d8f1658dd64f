"""A run as one job of a sweep (``--multirun``): a refused or failed job is one line and the
sweep goes on; the sweep ends by saying what did not complete and exits non-zero
(:class:`SweepEnd`, a Hydra callback); and a job never outlives its sweep
(:func:`stop_with_sweep`).

A refused job (its directory holds another config's run, left untouched) is noted in the sweep's
folder (:func:`roadmap.rundir.record_refusal`) so that the tables list it with its reason.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from roadmap.rundir import RunDir, record_refusal, refusals

SWEEP_PID = "ROADMAP_SWEEP_PID"
"""The environment variable through which a sweep's job processes (joblib's workers,
submitit's) know the process of the sweep."""

ended_badly: list[str] = []
"""What :class:`SweepEnd` found wrong with the sweep this process ran (the entry point's exit
code)."""


def label(cfg: DictConfig, run_dir: Path) -> str:
    name = RunDir(run_dir).identity_from_name().get("variant", "")
    return f"{cfg.step_name}{' (' + name + ')' if name else ''} seed {cfg.seed}"


def refuse(cfg: DictConfig, run_dir: Path, sweep_dir: Path, reason: str) -> None:
    """Say in one line that the sweep refused this run, and note it in the sweep's folder."""
    print(f"roadmap: {label(cfg, run_dir)}: refused: {reason}", file=sys.stderr, flush=True)
    try:
        record_refusal(run_dir, sweep_dir, reason)
    except OSError as exc:
        print(f"roadmap: could not note the refusal in {sweep_dir}: {exc}", file=sys.stderr)


def failed(cfg: DictConfig, run_dir: Path, message: str) -> None:
    print(f"roadmap: {label(cfg, run_dir)}: {message}", file=sys.stderr, flush=True)


class SweepEnd(Callback):
    """At the end of a sweep: one line saying how many of its runs completed, and the runs it
    refused or that failed (the entry point then exits 1)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()
        ended_badly.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from roadmap.results.collect import expected_runs
        from roadmap.rundir import CorruptRecord, subdir

        out = Path(config.hydra.sweep.dir)
        try:
            jobs = expected_runs(out) or []
        except ValueError:
            jobs = []
        refused = refusals(out, self.started)
        counts: dict[str, int] = {}
        for step, name, seed in jobs:
            where = subdir(step, name, seed)
            try:
                record = RunDir(out / where).read_record()
            except CorruptRecord:
                record = None
            state = ("refused" if where in refused else
                     record.status if record is not None else
                     "running in another process" if RunDir(out / where).busy() else
                     "not run")
            counts[state] = counts.get(state, 0) + 1
        said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"roadmap: sweep {out}: {len(jobs)} runs: {said}", file=sys.stderr, flush=True)
        ended_badly.extend(s for s in counts
                           if s not in ("completed", "running in another process"))


def stop_with_sweep() -> None:
    """In a job process other than the sweep's own (joblib's workers, submitit's local jobs),
    end this process as soon as the sweep's process is gone: killed with ``kill -9``, it can
    signal no one. Checked every second by a daemon thread (once per process); the run resumes
    from its checkpoint when the sweep is rerun."""
    sweep = int(os.environ.get(SWEEP_PID, "0") or 0)
    if not sweep or sweep == os.getpid() or getattr(stop_with_sweep, "watching", False):
        return
    stop_with_sweep.watching = True
    parent = os.getppid()

    def gone() -> bool:
        if parent == sweep and os.getppid() != parent:
            return True
        try:
            os.kill(sweep, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def watch() -> None:
        while not gone():
            time.sleep(1)
        print(f"roadmap: the sweep's process {sweep} is gone; stopping this job (rerun the "
              "sweep to resume)", file=sys.stderr, flush=True)
        os._exit(143)

    threading.Thread(target=watch, name="stop-with-sweep", daemon=True).start()
