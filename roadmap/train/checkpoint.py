"""A run's files: ``last.pt`` (save, and resume only into the same config) and JSON records.

Every write goes to a temporary file, is flushed to disk (fsync) and renamed over the old one,
so a kill or a power cut at any moment leaves the previous file whole; a write that fails (a
full disk) removes its temporary file and says so in one line. The checkpoint holds tensors and
plain values only and is loaded with ``weights_only=True``. It keeps no random-number state:
every epoch reseeds from (seed, epoch), so a resumed epoch draws what an uninterrupted one
would.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
from omegaconf import DictConfig, OmegaConf

from roadmap.runs import comparable
from roadmap.runtime import RunError, unwrap
from roadmap.train.rundir import CHECKPOINT
from roadmap.train.setup import Run


def _no_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` or what it was raised from is a full disk (torch.save wraps it)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into ``path.tmp``, fsync, rename over ``path``, fsync the folder. On any
    failure the temporary file is removed; a full disk is a :class:`RunError` naming ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _no_space(exc):
            raise RunError(f"no space left on the device writing {path}; free some space or "
                           "choose another hydra.run.dir (hydra.sweep.dir), then rerun to "
                           "resume") from exc
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_json(path: Path, data: dict) -> None:
    text = (json.dumps(data, indent=2, default=str) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


def save_checkpoint(path: Path, state: dict) -> None:
    """Write then rename, so that a kill leaves the previous checkpoint whole."""
    atomic_write(path, lambda f: torch.save(state, f))


def run_config(cfg: DictConfig) -> dict:
    """What a run directory records of its run's config: all of it but the volatile keys, as
    JSON gives it back (so that a stored and a requested config compare equal)."""
    return json.loads(json.dumps(comparable(OmegaConf.to_container(cfg, resolve=True))))


@dataclass
class Progress:
    """How far a run has got: finished epochs, their records, and its clock."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    train_images: int = 0
    wall_s: float = 0.0
    run_id: str | None = None


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "config")


def read_checkpoint(path: Path) -> dict:
    """A checkpoint (tensors and plain values only), or a :class:`RunError` naming the file and
    the fix if it is truncated, corrupt or holds anything else."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        json.loads(checkpoint["config"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path} is unreadable ({reason[:200]}); remove it to run this run "
                       f"again from its start (rm {path})") from None
    return checkpoint


def load_checkpoint(run_dir: Path) -> dict | None:
    """``run_dir``'s checkpoint if it has one (its config was checked by
    :class:`~roadmap.train.rundir.RunDir`)."""
    path = run_dir / CHECKPOINT
    return read_checkpoint(path) if path.is_file() else None


def restore(run: Run, checkpoint: dict) -> Progress:
    """Load a checkpoint's weights and optimizer state into ``run``: where to go on from."""
    s = run.stepper
    unwrap(run.model).load_state_dict(checkpoint["model"])
    s.optimizer.load_state_dict(checkpoint["optimizer"])
    s.scheduler.load_state_dict(checkpoint["scheduler"])
    s.scaler.load_state_dict(checkpoint["scaler"])
    if s.ema is not None and checkpoint.get("ema") is not None:
        s.ema.load_state_dict(checkpoint["ema"])
    return Progress(checkpoint["epoch"], list(checkpoint["history"]),
                    checkpoint["train_seconds"], checkpoint["train_images"],
                    checkpoint["wall_s"], checkpoint.get("run_id"))


def checkpoint_state(run: Run, cfg: DictConfig, progress: Progress) -> dict:
    s = run.stepper
    return {
        "model": unwrap(run.model).state_dict(), "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(),
        "ema": s.ema.state_dict() if s.ema is not None else None, "epoch": progress.epoch,
        "history": progress.history, "train_seconds": progress.train_seconds,
        "train_images": progress.train_images, "wall_s": progress.wall_s,
        "config": json.dumps(run_config(cfg)), "run_id": progress.run_id,
        "model_config": OmegaConf.to_yaml(OmegaConf.structured(run.model_cfg)),
    }
