"""Hydra glue: the config directory, the schema registration, composing a step.

This is the only place (with the entry points) that imports Hydra; model code takes the plain
:class:`~roadmap.models.ModelConfig` that :func:`model_config` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from roadmap.ladder import check_step_on_ladder
from roadmap.models.config import ModelConfig, scaled_values
from roadmap.runs import run_subdir

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register_configs() -> None:
    """Register the model flags' schema (a misspelt ``model.<flag>`` fails at compose) and the
    resolvers that name run directories (:func:`roadmap.runs.run_subdir`) and pick a value by
    a flag (:func:`when`, for the protocol's switches). Called by the entry
    points and :func:`compose`, never at import."""
    ConfigStore.instance().store(group="model", name="base", node=ModelConfig)
    if not OmegaConf.has_resolver("roadmap.run_subdir"):
        OmegaConf.register_new_resolver("roadmap.run_subdir", run_subdir)
    if not OmegaConf.has_resolver("roadmap.when"):
        OmegaConf.register_new_resolver("roadmap.when", when)


def when(flag: bool, then, otherwise):
    """``${roadmap.when:flag,a,b}``: ``a`` if the boolean ``flag`` is true, else ``b``."""
    if not isinstance(flag, bool):
        raise ValueError(f"roadmap.when takes true or false, not {flag!r}")
    return then if flag else otherwise


def conf_dir() -> Path:
    if not (CONF_DIR / "config.yaml").is_file():
        raise FileNotFoundError(
            f"config directory {CONF_DIR} not found: install roadmap from its repository with "
            "`pip install -e .` (make does) so that conf/ sits beside the package")
    return CONF_DIR


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides (``["step=gelu", ...]``) and check it."""
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    check_config(cfg)
    return cfg


def check_config(cfg: DictConfig) -> None:
    """Checks Hydra cannot make: the step is on the ladder, the model flags are valid."""
    check_step_on_ladder(cfg.step_name, cfg.ladder.name)
    model_config(cfg)


def model_config(cfg: DictConfig, scaled: bool = False) -> ModelConfig:
    """The plain :class:`ModelConfig` of a composed config, validated as it is made. With
    ``scaled``, the network a run trains: the preset's ``scale`` applied to width and depths."""
    values = OmegaConf.to_container(cfg.model, resolve=True)
    if scaled:
        values = scaled_values(values, cfg.scale.width, cfg.scale.depth)
    return ModelConfig.from_dict(values)
