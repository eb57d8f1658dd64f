"""Hydra glue: the config directory, the schema registration, composing a step.

This is the only place (with the entry points) that imports Hydra; model code takes the plain
:class:`~roadmap.models.ModelConfig` that :func:`model_config` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from roadmap.errors import RunError
from roadmap.ladder import check_step_on_ladder
from roadmap.models.config import ModelConfig
from roadmap.rundir import run_subdir
from roadmap.schema import DATA_SCHEMAS, TrainConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register_configs() -> None:
    """Register the schema (:mod:`roadmap.schema`: every value typed at compose, a misspelt key
    fails there) and the resolvers that name run directories
    (:func:`roadmap.rundir.run_subdir`) and pick a value by a flag (:func:`when`, for the
    protocol's switches). Called by the entry points and :func:`compose`, never at import;
    once per process."""
    store = ConfigStore.instance()
    if "schema.yaml" in store.repo:
        return
    store.store(name="schema", node=TrainConfig)
    store.store(group="model", name="base", node=ModelConfig)
    for name, node in DATA_SCHEMAS.items():
        store.store(group="data", name=name, node=node)
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


def compose(overrides: Sequence[str] = (), check: bool = True) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides (``["step=gelu", ...]``) and, unless
    ``check`` is false, check it (:func:`settings`); a value of the wrong type or an unknown key
    is a one-line :class:`RunError` either way."""
    register_configs()
    try:
        with _hydra():
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except HydraException as exc:
        raise RunError(composition_error(str(exc), exc.__cause__)) from None
    if check:
        settings(cfg)
    return cfg


_OURS: list = []
"""The Hydra initialised on ``conf/``, made once per process: making one costs more than
composing with it."""


@contextlib.contextmanager
def _hydra() -> Iterator[None]:
    """Hydra initialised on ``conf/`` made current while composing; whatever was current before
    (an app's Hydra, or none) is put back after."""
    current = GlobalHydra.instance()
    before = current.hydra
    if not _OURS:
        current.clear()
        initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3")  # makes it current
        _OURS.append(current.hydra)
    current.hydra = _OURS[0]
    try:
        yield
    finally:
        current.hydra = before


TYPE_RULES = {"Integer": "must be an integer", "int": "must be an integer",
              "Float": "must be a number", "float": "must be a number",
              "Boolean": "must be true or false", "bool": "must be true or false"}
"""OmegaConf's names of the types a value could not be converted to, and what to tell."""


def composition_error(message: str, cause: BaseException | str | None = None) -> str:
    """Hydra's error composing a config (several lines, the reason in ``cause``) as one line:
    ``seed=abc is invalid: must be an integer`` for a value of the wrong type."""
    override = re.search(r"override (\S+=\S*)", message)
    wanted = re.search(r"(?:converted to|not a valid) (\w+)", str(cause or message))
    if override and wanted and wanted.group(1) in TYPE_RULES:
        rule = TYPE_RULES[wanted.group(1)]
        if re.search(r"full_key: \S+\[\d+\]", str(cause or message)):  # an item of a list
            rule = rule.replace("must be an integer", "must be a list of integers").replace(
                "must be a number", "must be a list of numbers")
        return f"{override.group(1)} is invalid: {rule}"
    option = re.search(r"Could not find '(\w+)/([^']*)'", message)
    if option:
        group, value = option.groups()
        return f"{group}={value} is invalid; valid values: {', '.join(choices(group))}"
    unknown = re.search(r"Could not override '([^']+)'", message)
    if unknown:
        return (f"{unknown.group(1)} is not a key of the config{close_key(unknown.group(1))}; "
                "check its spelling (every key: roadmap/schema.py)")
    return one_line(message, cause)


def keys_under(path: Sequence[str]) -> set[str]:
    """The schema's keys under a dotted path (``[]``: the top level; ``["data"]``: every data
    schema's)."""
    classes: list[type] = [TrainConfig]
    for part in path:
        below: list[type] = []
        for node in classes:
            if node is TrainConfig and part == "data":
                below += DATA_SCHEMAS.values()
                continue
            kind = typing.get_type_hints(node).get(part)
            if dataclasses.is_dataclass(kind):
                below.append(kind)
        classes = below
    return {f.name for node in classes for f in dataclasses.fields(node)}


def close_key(key: str) -> str:
    """`` (did you mean epochs?)`` for a misspelt key with a close one in the schema, else
    ""."""
    *path, leaf = key.split(".")
    close = difflib.get_close_matches(leaf, sorted(keys_under(path)), n=1, cutoff=0.7)
    return f" (did you mean {'.'.join([*path, close[0]])}?)" if close else ""


def choices(group: str) -> list[str]:
    """The options of a config group (``conf/<group>/*.yaml``), the data schemas left out."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("schema_"))


def one_line(message: str, cause: BaseException | str | None = None) -> str:
    """A multi-line Hydra error (the option lists and the search path dropped), with the first
    line of its cause in parentheses."""
    lines = [ln.strip() for ln in message.splitlines()]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    skip = ("full_key:", "object_type=", "reference_type=", "Set the environment variable")
    text = " ".join(ln for ln in lines if ln and not ln.startswith(skip))
    reason = str(cause or "").strip()
    if reason and reason.splitlines()[0].strip() not in text:
        text += f" ({reason.splitlines()[0].strip()})"
    return text


def settings(cfg: DictConfig) -> TrainConfig:
    """The typed, checked config of a composed one (:class:`roadmap.schema.TrainConfig`): every
    range and choice checked as its dataclass is made; the first bad value, or a key the schema
    does not have, is a one-line error."""
    unknown = sorted(set(cfg.keys()) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise RunError(f"{unknown[0]} is not a key of the config{close_key(unknown[0])}; remove "
                       "it, or see roadmap/schema.py for the keys there are")
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise RunError(composition_error(str(exc), exc.__cause__)) from None
    check_step_on_ladder(typed.step_name, typed.ladder.name)
    return typed


def model_config(cfg: DictConfig, scaled: bool = False) -> ModelConfig:
    """The plain :class:`ModelConfig` of a composed config, validated as it is made. With
    ``scaled``, the network a run trains: the preset's ``scale`` applied to width and depths."""
    typed = settings(cfg)
    return typed.network() if scaled else typed.model
