"""``python -m roadmap.train``: Hydra composes ``conf/config.yaml``, :func:`train` runs it.

A config or data error ends a single run with one line and exit code 2, Hydra's own errors
(a value of the wrong type, an unknown group option) included. In a sweep (``--multirun``) a
failed or refused run is one line and the other jobs go on; the sweep ends with a line saying
how its runs ended and exits 1 if any did not complete (:mod:`roadmap.train.jobs`). A run
directory that another process is writing fails a single run at once; a sweep skips it (two
sweeps on one folder share the work). Ctrl-C is one line and exit code 130; the run resumes
from its checkpoint when the same command is rerun. Hydra's ``.hydra/`` files are written once
the directory is this run's (``hydra.output_subdir`` is null so that Hydra does not overwrite
those of a directory that holds another config's run).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from roadmap.conf import composition_error, conf_dir, register_configs
from roadmap.errors import RunError
from roadmap.models import ConfigError
from roadmap.rundir import RunDir, RunLocked, RunRefused
from roadmap.train import jobs
from roadmap.train.data import DataError
from roadmap.train.run import train


class HeldStderr(io.TextIOBase):
    """Standard error held back until :meth:`release` (the job has started), then passed
    through: what Hydra says before a job starts is its composition error, made one line."""

    def __init__(self, stream) -> None:
        self.stream, self.held, self.released = stream, [], False

    def write(self, text: str) -> int:
        if self.released:
            return self.stream.write(text)
        self.held.append(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.stream.write("".join(self.held))
            self.held = []


def run_from_cli(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if isinstance(sys.stderr, HeldStderr):
        sys.stderr.release()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return sweep_job(cfg, run_dir, hydra_cfg)
    try:
        metrics = train(cfg, run_dir, lambda: RunDir(run_dir).write_hydra(cfg, hydra_cfg))
    except (ConfigError, DataError, RunError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if metrics["status"] != "completed":
        print(f"error: run {metrics['status']}: {metrics.get('error', '')}", file=sys.stderr)
        sys.exit(1)
    return metrics


def sweep_job(cfg: DictConfig, run_dir: Path, hydra_cfg: DictConfig) -> dict | None:
    """One job of a sweep: whatever stops it is one line and the sweep goes on (the sweep's
    end says what did not complete, :class:`roadmap.train.jobs.SweepEnd`)."""
    jobs.stop_with_sweep()
    try:
        metrics = train(cfg, run_dir, lambda: RunDir(run_dir).write_hydra(cfg, hydra_cfg))
    except RunLocked as exc:  # another sweep is training it: leave it to that one
        print(f"roadmap: skipping: {exc}", file=sys.stderr)
        return None
    except RunRefused as exc:
        jobs.refuse(cfg, run_dir, Path(hydra_cfg.sweep.dir), str(exc))
        return None
    except (ConfigError, DataError, RunError, ValueError) as exc:
        jobs.failed(cfg, run_dir, f"failed: {exc}")
        return None
    if metrics["status"] != "completed":
        jobs.failed(cfg, run_dir, f"{metrics['status']}: {metrics.get('error', '')}")
        return None
    return metrics


def main() -> None:
    """Hydra's main; a single run's composition error (Hydra prints it before the job starts,
    over several lines) is made one line. A sweep's output is never held."""
    import hydra

    register_configs()
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()),
                       config_name="config")(run_from_cli)
    try:
        if {"-m", "--multirun"} & set(sys.argv[1:]):
            os.environ[jobs.SWEEP_PID] = str(os.getpid())
            entry()
            if jobs.ended_badly:
                sys.exit(1)
            return
        single(entry)
    except KeyboardInterrupt:
        print("roadmap: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


def single(entry) -> None:
    """A single run, its composition error held back and made one line."""
    real = sys.stderr
    held = sys.stderr = HeldStderr(real)
    try:
        entry()
    except SystemExit as exc:
        said = "".join(held.held).strip()
        if held.released or not exc.code or not said or "Traceback" in said:
            raise
        held.held = []
        print(f"error: {composition_error(said)}", file=real)
        sys.exit(2)
    finally:
        sys.stderr = real
        held.release()


if __name__ == "__main__":
    main()
