"""``python -m roadmap.train``: Hydra composes ``conf/config.yaml``, :func:`train` runs it.

A config or data error ends a single run with one line and exit code 2; in a sweep
(``--multirun``) a failed run raises, so that Hydra runs the other jobs and the sweep exits
non-zero. A run directory that another process is writing fails a single run at once; a sweep
skips it (two sweeps on one folder share the work). Hydra's ``.hydra/`` files are written here,
once the directory is this run's (``hydra.output_subdir`` is null so that Hydra does not
overwrite those of a directory that holds another config's run).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from roadmap.conf import conf_dir, register_configs
from roadmap.models import ConfigError
from roadmap.runtime import RunError
from roadmap.train.data import DataError
from roadmap.train.run import train
from roadmap.train.rundir import RunLocked


def save_hydra_files(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path) -> None:
    """What Hydra writes into ``.hydra/``: the job's config, Hydra's, and the overrides."""
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), out / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, out / "overrides.yaml")


def run_from_cli(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = train(cfg, run_dir, lambda: save_hydra_files(cfg, hydra_cfg, run_dir))
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
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path=str(conf_dir()),
               config_name="config")(run_from_cli)()


if __name__ == "__main__":
    main()
