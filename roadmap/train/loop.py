"""The training loop: the loss, one optimisation step, one epoch, and evaluation.

:class:`Stepper` holds what a step needs (network, optimizer, schedule, scaler, EMA, autocast,
accumulation) and is the only code that runs a training step: ``roadmap.train`` runs epochs of
it and ``roadmap.bench`` times it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from roadmap.runtime import Dist
from roadmap.train.loaders import LEFT_OUT


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0):
    """Cross-entropy in fp32, against class indices or class probabilities (Mixup/CutMix),
    with label smoothing."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


@dataclass
class Stepper:
    """One optimisation step of ``model`` (called through ``net``: DDP and/or compiled)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    net: nn.Module | None = None
    scheduler: Any = None
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None
    autocast: Callable = contextlib.nullcontext
    accum: int = 1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    channels_last: bool = False
    distributed: bool = False

    def __post_init__(self) -> None:
        self.net = self.model if self.net is None else self.net
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(enabled=False)

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor,
                         sync: bool = True) -> torch.Tensor:
        """Loss of one (micro-)batch and its gradient, scaled for accumulation; ``sync=False``
        skips DDP's gradient all-reduce (a micro-batch before the last)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = contextlib.nullcontext() if sync or not self.distributed else self.net.no_sync()
        with ctx:
            with self.autocast():
                loss = loss_fn(self.net(x), y, self.label_smoothing)
            self.scaler.scale(loss / self.accum).backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        """Clip, step, update the scaler, clear the gradients, advance the schedule and EMA."""
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A whole step on one batch (no accumulation)."""
        loss = self.forward_backward(x, y)
        self.optimizer_step()
        return loss


CHECK_EVERY = 50
"""Batches between checks for a non-finite loss. The losses stay on the device in between: no
host synchronisation per step, which would stall a GPU's pipeline."""


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    batches: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.batches, 1)


def _check(losses: torch.Tensor, done: int, stats: EpochStats, epoch: int) -> None:
    """Sum the first ``done`` losses into ``stats``; :class:`Diverged` naming the first
    non-finite one."""
    seen = losses[:done]
    bad = (~torch.isfinite(seen)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise Diverged(f"loss is {seen[i].item()} at epoch {epoch + 1}, batch {i + 1}")
    stats.loss_sum, stats.batches = seen.sum().item(), done


def train_epoch(stepper: Stepper, batches: Iterable, n_batches: int, epoch: int,
                on_step: Callable[[EpochStats], None] | None = None) -> EpochStats:
    """``n_batches`` micro-batches of ``batches`` (a multiple of the accumulation), stepping the
    optimizer every ``accum`` of them. Raises :class:`Diverged` on a non-finite loss, checked
    every :data:`CHECK_EVERY` batches and at the end."""
    stepper.net.train()
    stats, t0 = EpochStats(), time.perf_counter()
    losses, done = None, 0
    stepper.optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(batches):
        if i >= n_batches:
            break
        boundary = (i + 1) % stepper.accum == 0
        loss = stepper.forward_backward(x, y, sync=boundary)
        if losses is None:
            losses = torch.zeros(n_batches, dtype=torch.float64, device=loss.device)
        losses[i] = loss
        if (i + 1) % CHECK_EVERY == 0:
            _check(losses, i + 1, stats, epoch)
        if boundary:
            stepper.optimizer_step()
        done, stats.images = i + 1, stats.images + len(x)
        if on_step is not None and boundary:
            stats.seconds = time.perf_counter() - t0
            on_step(stats)
    if losses is not None:
        _check(losses, done, stats, epoch)
    stats.seconds = time.perf_counter() - t0
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, dist: Dist,
             autocast: Callable = contextlib.nullcontext) -> dict[str, float]:
    """Loss, top-1 and top-5 (%) over every process's share of the evaluation set, and the
    images ``skipped`` (labelled :data:`~roadmap.train.loaders.LEFT_OUT`: not decodable)."""
    model.eval()
    loss_sum, top1, top5, count, skipped = 0.0, 0.0, 0.0, 0.0, 0.0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        keep = y != LEFT_OUT
        if not keep.all():
            skipped += (~keep).sum().item()
            x, y = x[keep], y[keep]
        with autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == y[:, None]
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        count += len(y)
    loss_sum, top1, top5, count, skipped = dist.all_sum([loss_sum, top1, top5, count, skipped],
                                                        device)
    return {"loss": loss_sum / count, "top1": 100 * top1 / count, "top5": 100 * top5 / count,
            "skipped": int(skipped)}
