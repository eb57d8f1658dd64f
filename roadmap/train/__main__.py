"""``python -m roadmap.train``: Hydra composes ``conf/config.yaml``, :func:`train` runs it.

A config or data error ends a single run with one line and exit code 2; in a sweep
(``--multirun``) a failed run raises, so that Hydra runs the other jobs and the sweep exits
non-zero.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from roadmap.conf import conf_dir, register_configs
from roadmap.models import ConfigError
from roadmap.runtime import RunError
from roadmap.train.data import DataError
from roadmap.train.run import train


def run_from_cli(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg, hydra_cfg.runtime.output_dir)
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
