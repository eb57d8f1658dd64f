"""``python -m roadmap.train``: Hydra composes ``conf/config.yaml``, :func:`train` runs it.

A config or data error ends a single run with one line and exit code 2, Hydra's own errors
(a value of the wrong type, an unknown group option) included; in a sweep (``--multirun``) a
failed run raises, so that Hydra runs the other jobs and the sweep exits non-zero. A run
directory that another process is writing fails a single run at once; a sweep skips it (two
sweeps on one folder share the work). Hydra's ``.hydra/`` files are written once the directory
is this run's (``hydra.output_subdir`` is null so that Hydra does not overwrite those of a
directory that holds another config's run).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from omegaconf import DictConfig

from roadmap.conf import composition_error, conf_dir, register_configs
from roadmap.errors import RunError
from roadmap.models import ConfigError
from roadmap.rundir import RunDir, RunLocked
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
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = train(cfg, run_dir, lambda: RunDir(run_dir).write_hydra(cfg, hydra_cfg))
    except RunLocked as exc:
        if multirun:  # another sweep is training it: leave it to that one
            print(f"roadmap: skipping: {exc}", file=sys.stderr)
            return None
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ConfigError, DataError, RunError, ValueError) as exc:
        if multirun:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if metrics["status"] != "completed":
        message = f"run {metrics['status']}: {metrics.get('error', '')}"
        if multirun:
            raise RunError(f"{cfg.step_name} seed {cfg.seed}: {message}")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    return metrics


def main() -> None:
    """Hydra's main; a single run's composition error (Hydra prints it before the job starts,
    over several lines) is made one line. A sweep's output is never held."""
    import hydra

    register_configs()
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()),
                       config_name="config")(run_from_cli)
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        entry()
        return
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
