"""What a checkpoint holds of a run, and putting it back: :class:`Progress`, :func:`state`,
:func:`restore`.

The checkpoint is a plain state dict of tensors and plain values (written and read by
:class:`roadmap.rundir.RunDir`). It keeps no random-number state: every epoch reseeds from
(seed, epoch), so a resumed epoch draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from roadmap.runtime import unwrap
from roadmap.train.setup import Run


@dataclass
class Progress:
    """How far a run has got: finished epochs, their records, and its clock."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    train_images: int = 0
    wall_s: float = 0.0
    run_id: str | None = None


def restore(run: Run, checkpoint: dict) -> Progress:
    """Load a checkpoint's weights and optimizer state into ``run``: where to go on from."""
    stepper = run.stepper
    unwrap(run.model).load_state_dict(checkpoint["model"])
    stepper.optimizer.load_state_dict(checkpoint["optimizer"])
    stepper.scheduler.load_state_dict(checkpoint["scheduler"])
    stepper.scaler.load_state_dict(checkpoint["scaler"])
    if stepper.ema is not None and checkpoint.get("ema") is not None:
        stepper.ema.load_state_dict(checkpoint["ema"])
    return Progress(checkpoint["epoch"], list(checkpoint["history"]),
                    checkpoint["train_seconds"], checkpoint["train_images"],
                    checkpoint["wall_s"], checkpoint.get("run_id"))


def state(run: Run, config: dict, progress: Progress, cpu: dict) -> dict:
    """The checkpoint of ``run`` after ``progress``; ``config`` is what the run directory
    records of its config, ``cpu`` how the CPU computed it (threads, kernels' ISA: a resume
    compares both, :func:`roadmap.runtime.cpu_kernels`)."""
    stepper = run.stepper
    return {
        "model": unwrap(run.model).state_dict(), "optimizer": stepper.optimizer.state_dict(),
        "scheduler": stepper.scheduler.state_dict(), "scaler": stepper.scaler.state_dict(),
        "ema": stepper.ema.state_dict() if stepper.ema is not None else None,
        "epoch": progress.epoch, "history": progress.history,
        "train_seconds": progress.train_seconds, "train_images": progress.train_images,
        "wall_s": progress.wall_s, "config": json.dumps(config), "run_id": progress.run_id,
        "cpu": cpu,
        "model_config": OmegaConf.to_yaml(OmegaConf.structured(run.model_cfg)),
    }
