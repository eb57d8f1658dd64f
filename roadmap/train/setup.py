"""Everything one run needs before its first step, built from its checked config: data, model,
loaders, optimizer and schedule (:func:`prepare`).

The benchmarks build the same model through :func:`run_model` and the same data path through
the data set's own ``train_batches``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from roadmap.errors import RunError
from roadmap.ladder import Step, get_step
from roadmap.models import ModelConfig, build_model, count_gflops, count_params
from roadmap.runtime import (
    Dist,
    autocast_factory,
    memory_format,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    setup_distributed,
)
from roadmap.schema import TrainConfig
from roadmap.train.data import load_dataset
from roadmap.train.loaders import TrainBatches
from roadmap.train.loop import Stepper
from roadmap.train.optim import Schedule, build_optimizer, build_scheduler


def resolve_batch(batch_size: int, accum_steps: int, total_batch: int | None,
                  world: int) -> tuple[int, int]:
    """(batch per process, micro-batches per optimizer step) for ``world`` processes.

    Without ``total_batch``: ``batch_size`` and ``accum_steps`` as given. With it, the total
    is what every optimizer step sees, however many processes there are: ``batch_size`` per
    process and as many accumulation steps as reach the total when ``batch_size x world``
    divides it; else, when the total is smaller than ``batch_size x world``, a smaller batch per
    process (256 on 8 processes of batch 128: 32 each); else the fewest accumulation steps whose
    per-process batch is a whole number no larger than ``batch_size``. What cannot be split
    evenly fails with one line naming the fix."""
    if total_batch is None:
        return batch_size, accum_steps
    per_step = batch_size * world
    if total_batch % per_step == 0:
        return batch_size, total_batch // per_step
    accum = -(-total_batch // per_step)  # ceil
    if total_batch % (world * accum) == 0:
        return total_batch // (world * accum), accum
    raise RunError(f"total_batch={total_batch} cannot be split evenly among {world} "
                   f"process(es) with batch_size<={batch_size}; choose a total_batch that "
                   f"{world} x batch_size or a multiple of it divides, or another number of "
                   "processes")


def run_model(mcfg: ModelConfig, device: torch.device, channels_last: bool) -> nn.Module:
    """The network a run trains, on its device, in its memory layout."""
    return build_model(mcfg).to(device, memory_format=memory_format(channels_last))


@dataclass
class Run:
    """One run, ready for its first step."""

    step: Step
    dist: Dist
    device: torch.device
    model_cfg: ModelConfig
    model: nn.Module
    params: int
    gflops: float
    stepper: Stepper
    train_batches: TrainBatches
    eval_batches: Iterable
    """The test set's batches: reported, never used to choose anything."""
    val_batches: Iterable | None
    """The validation split's batches (None without one): what choices are made on."""
    n_train: int
    data_source: dict
    """What the data set was read from (:attr:`roadmap.train.data.DataSet.source`)."""
    steps_per_epoch: int
    total_batch: int
    lr: float


def prepare(cfg: TrainConfig, dist: Dist) -> Run:
    """Load the data and build model, loaders, optimizer and schedule for this process from a
    checked config (:func:`roadmap.conf.settings`). Everything that can be wrong with the data
    fails here, before training."""
    mcfg = cfg.network()
    device = resolve_device(cfg.device, dist.local_rank)
    setup_distributed(dist, device)
    dtype = resolve_precision(cfg.precision, device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    batch_size, accum = resolve_batch(cfg.batch_size, cfg.accum_steps, cfg.total_batch,
                                      dist.world)
    dataset = load_dataset(cfg.data)

    torch.manual_seed(cfg.seed)
    model = run_model(mcfg, device, channels_last)
    batches = dataset.train_batches(cfg, batch_size, device, dist)
    steps_per_epoch = len(batches) // accum
    if steps_per_epoch < 1:
        raise RunError(f"an epoch has {len(batches)} batches, fewer than accum_steps="
                       f"{accum}; lower batch_size or accum_steps")
    total_batch = batch_size * accum * dist.world
    lr = cfg.lr if cfg.lr is not None else cfg.recipe.lr * total_batch / cfg.recipe.lr_batch
    stepper = make_stepper(cfg, model, device, dist, dtype, channels_last, accum, lr,
                           steps_per_epoch)
    return Run(step=get_step(cfg.step_name, cfg.ladder.name), dist=dist, device=device,
               model_cfg=mcfg, model=model, params=count_params(model),
               gflops=count_gflops(model, cfg.data.image_size, mcfg.in_chans), stepper=stepper,
               train_batches=batches, eval_batches=dataset.eval_batches(cfg, device, dist),
               val_batches=dataset.eval_batches(cfg, device, dist, "val"),
               n_train=dataset.n_train, data_source=dataset.source, steps_per_epoch=steps_per_epoch,
               total_batch=total_batch, lr=lr)


def make_stepper(cfg: TrainConfig, model: nn.Module, device: torch.device, dist: Dist,
                 dtype: torch.dtype | None, channels_last: bool, accum: int, lr: float,
                 steps_per_epoch: int) -> Stepper:
    """Optimizer, schedule, scaler, EMA and the wrapped network of a run."""
    recipe = cfg.recipe
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay),
                         use_buffers=True) if recipe.ema else None)
    optimizer = build_optimizer(model, recipe, lr)
    scheduler = build_scheduler(optimizer, Schedule(recipe, cfg.epochs, steps_per_epoch, lr))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return Stepper(model, optimizer, net, scheduler, scaler, ema, autocast_factory(dtype, device),
                   accum, recipe.label_smoothing, recipe.grad_clip, channels_last, dist.world > 1)
