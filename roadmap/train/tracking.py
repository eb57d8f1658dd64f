"""Experiment tracking: Weights & Biases (offline by default) or nothing.

The run directory stays the source of truth; the tracker only mirrors config, per-epoch metrics,
parameters and GFLOPs. ``logger.mode=online`` waits at most ``logger.init_timeout`` seconds for
the server (no network, no API key: a warning, then the run logs offline and can be synced
later with ``wandb sync``): tracking never stops a run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from roadmap.errors import first_line
from roadmap.schema import LoggerConfig


class NullTracker:
    run_id: str | None = None

    def log(self, values: dict, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    def __init__(self, logger: LoggerConfig, config: dict, run_dir: Path, name: str,
                 run_id: str | None) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        if not (os.environ.get("HOME") or os.environ.get("XDG_CACHE_HOME")):
            # else wandb's service logs ~18 lines about the cache it cannot place
            os.environ["XDG_CACHE_HOME"] = str(Path(run_dir).resolve() / "wandb" / ".cache")
        self.wandb = wandb
        options = dict(project=logger.project, entity=logger.entity, group=logger.group,
                       tags=list(logger.tags), name=name, dir=str(run_dir), config=config,
                       id=run_id, resume="allow" if run_id else None)
        timeout = float(logger.init_timeout)
        try:
            self.run = wandb.init(mode=logger.mode, **options,
                                  settings=wandb.Settings(init_timeout=timeout))
        except Exception as exc:
            if logger.mode == "offline":
                raise
            print(f"roadmap: wandb could not start online ({first_line(exc, 160)}); logging "
                  f"offline instead (upload later: wandb sync {run_dir}/wandb)", file=sys.stderr)
            self.run = wandb.init(mode="offline", **options)
        self.run_id = self.run.id

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish()


def make_tracker(logger: LoggerConfig, config: dict, run_dir: Path, name: str, run_id: str | None,
                 enabled: bool) -> NullTracker:
    if not enabled or logger.name == "none":
        return NullTracker()
    return WandbTracker(logger, config, run_dir, name, run_id)
