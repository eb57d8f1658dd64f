"""Optimizer, weight-decay groups and the learning-rate schedule of a recipe."""

from __future__ import annotations

import math

import torch
from torch import nn

from roadmap.schema import RecipeConfig


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool) -> list[dict]:
    """Two groups: decayed weights, and (if ``exclude_1d``) biases, norm weights and layer
    scales without decay, as in the official ConvNeXt code."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = exclude_1d and (p.ndim <= 1 or name.endswith((".bias", "layer_scale")))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def can_fuse(model: nn.Module) -> bool:
    """Whether PyTorch's fused (one kernel for all parameters) SGD/AdamW can update ``model``:
    float parameters on CPU or CUDA. It is faster than the default per-parameter loop, most of
    all for the many small tensors of the cpu preset's models."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
               for p in model.parameters())


def build_optimizer(model: nn.Module, recipe: RecipeConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay, recipe.wd_exclude_1d)
    fused = can_fuse(model) or None
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.betas), eps=recipe.eps,
                             fused=fused)


class Schedule:
    """lr multiplier per optimizer step: linear warm-up, then cosine to ``min_lr`` or step decay.

    The recipe's schedule is given in its own epochs (``recipe.epochs``); a run of another length
    gets the same shape scaled to its ``epochs`` (warm-up 20 of 300 epochs stays 1/15 of the run).
    """

    def __init__(self, recipe: RecipeConfig, epochs: int, steps_per_epoch: int,
                 base_lr: float) -> None:
        stretch = epochs / recipe.epochs
        self.total = max(epochs * steps_per_epoch, 1)
        self.warmup = round(recipe.warmup_epochs * stretch * steps_per_epoch)
        self.milestones = [round(m * stretch * steps_per_epoch) for m in recipe.milestones]
        self.kind, self.gamma = recipe.schedule, recipe.gamma
        self.floor = recipe.min_lr / base_lr if base_lr > 0 else 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        progress = (step - self.warmup) / max(self.total - self.warmup - 1, 1)
        progress = min(progress, 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
