"""A run's files: ``last.pt`` (save, and resume only into the same config) and JSON records.

Every write goes to a temporary file first and is renamed over the old one, so a kill at any
moment leaves the previous file whole. The checkpoint holds tensors and plain values only and is
loaded with ``weights_only=True``. It keeps no random-number state: every epoch reseeds from
(seed, epoch), so a resumed epoch draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from roadmap.runs import comparable, diff_keys
from roadmap.runtime import RunError, unwrap
from roadmap.train.setup import Run

CHECKPOINT = "last.pt"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write then rename, so that a kill leaves the previous checkpoint whole."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def run_config(cfg: DictConfig) -> dict:
    """What a checkpoint records of its run's config: all of it but the volatile keys."""
    return comparable(OmegaConf.to_container(cfg, resolve=True))


@dataclass
class Progress:
    """How far a run has got: finished epochs, their records, and its clock."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    train_images: int = 0
    wall_s: float = 0.0
    run_id: str | None = None


def load_checkpoint(run_dir: Path, cfg: DictConfig) -> dict | None:
    """``run_dir``'s checkpoint if it has one; refused if it was made with another config."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    changed = diff_keys(json.loads(checkpoint["config"]), run_config(cfg))
    if changed:
        raise RunError(f"{run_dir} holds a run with another config (differs in "
                       f"{', '.join(changed[:5])}); choose another hydra.run.dir or remove "
                       "that directory")
    return checkpoint


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
