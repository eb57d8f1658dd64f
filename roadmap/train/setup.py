"""Everything one run needs before its first step, built from its config: checks, data, model,
loaders, optimizer and schedule (:func:`prepare`).

The pieces are separate functions so that the benchmarks build the same model and data path a
run trains (:func:`run_model`, :func:`train_loader`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from roadmap.conf import model_config
from roadmap.ladder import Step, get_step
from roadmap.models import ModelConfig, build_model, count_gflops, count_params
from roadmap.runtime import (
    CHANNELS_LAST,
    DEVICES,
    PRECISIONS,
    Dist,
    RunError,
    autocast_factory,
    memory_format,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    setup_distributed,
)
from roadmap.train.augment import CROPS, BatchAugment
from roadmap.train.data import MemoryDataset, load_dataset
from roadmap.train.loaders import (
    FolderTrainLoader,
    MemoryEvalLoader,
    MemoryTrainLoader,
    folder_eval_loader,
)
from roadmap.train.loop import Stepper
from roadmap.train.optim import OPTIMIZERS, SCHEDULES, Schedule, build_optimizer, build_scheduler
from roadmap.train.randaugment import ERASING_MODES
from roadmap.train.tracking import LOGGERS

INTEGERS = {"seed": None, "epochs": 1, "batch_size": 1, "eval_batch_size": 1,
            "checkpoint_every": 1, "accum_steps": 1, "workers": 0, "augment_batches": 1,
            "data.image_size": 1,
            "data.val_size": 0, "data.val_seed": None}
"""Keys that must be integers, with their least valid value (None: any)."""
CHOICES = {"device": DEVICES, "precision": ("auto", *PRECISIONS),
           "channels_last": CHANNELS_LAST, "compile": (True, False),
           "progress": ("auto", True, False), "recipe.optimizer": OPTIMIZERS,
           "recipe.schedule": SCHEDULES, "logger.name": LOGGERS, "data.crop": CROPS,
           "recipe.erasing_mode": ERASING_MODES, "recipe.randaugment_increasing": (True, False)}
"""Keys with a fixed set of values, each set where it is used."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_errors(cfg: DictConfig) -> Iterator[str]:
    for key, least in INTEGERS.items():
        value = OmegaConf.select(cfg, key)
        if not _is_int(value) or (least is not None and value < least):
            yield f"{key}={value} is invalid: must be an integer" + (
                f" >= {least}" if least is not None else "")
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if not any(value == c and type(value) is type(c) for c in choices):
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else c for c in choices)
            yield f"{key}={value} is invalid; valid values: {shown}"
    for key in ("scale.width", "scale.depth"):
        if not _is_number(OmegaConf.select(cfg, key)) or OmegaConf.select(cfg, key) <= 0:
            yield f"{key}={OmegaConf.select(cfg, key)} is invalid: must be a number > 0"
    if cfg.lr is not None and (not _is_number(cfg.lr) or cfg.lr <= 0):
        yield f"lr={cfg.lr} is invalid: must be a number > 0, or null for the recipe's rule"
    for key in ("total_batch", "data.train_images"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (not _is_int(value) or value < 1):
            yield f"{key}={value} is invalid: must be an integer >= 1, or null"
    if cfg.data.crop == "pad" and (not _is_int(cfg.data.padding) or cfg.data.padding < 0):
        yield f"data.padding={cfg.data.padding} is invalid: must be an integer >= 0"
    if cfg.recipe.randaugment and not cfg.recipe.randaugment_increasing and \
            cfg.data.name != "imagefolder":
        yield ("recipe.randaugment_increasing=false is not available for in-memory data sets "
               "(the batched RandAugment has timm's increasing ops, the paper's inc1)")
    if not (_is_number(cfg.recipe.label_smoothing) and 0 <= cfg.recipe.label_smoothing < 1):
        yield (f"recipe.label_smoothing={cfg.recipe.label_smoothing} is invalid: must be a "
               "number in [0, 1)")


def check_values(cfg: DictConfig) -> None:
    """Every run setting's type and range, before any work: the first bad one as a
    :class:`RunError` naming the key and what is valid."""
    for error in _value_errors(cfg):
        raise RunError(error)


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


def train_loader(cfg: DictConfig, dataset, num_classes: int, device: torch.device,
                 dist: Dist, batch_size: int | None = None):
    """Training batches of ``dataset`` with the recipe's augmentation, this process's share,
    ``batch_size`` (default: the config's) at a time."""
    batch_size = batch_size or cfg.batch_size
    if isinstance(dataset, MemoryDataset):
        augment = BatchAugment(cfg.data, cfg.recipe, num_classes)
        return MemoryTrainLoader(dataset, batch_size, augment, device, dist.rank, dist.world,
                                 chunk=cfg.get("augment_batches", 1))
    return FolderTrainLoader(dataset, batch_size, cfg.data, cfg.recipe, num_classes, device,
                             cfg.workers, dist.rank, dist.world)


def eval_loader(cfg: DictConfig, dataset, device: torch.device, dist: Dist,
                split: str = "test"):
    """Batches of the ``test`` set or the ``val`` split (None when there is none)."""
    if isinstance(dataset, MemoryDataset):
        images, labels = ((dataset.test_images, dataset.test_labels) if split == "test"
                          else (dataset.val_images, dataset.val_labels))
        if images is None:
            return None
        return MemoryEvalLoader(images, labels, cfg.eval_batch_size, cfg.data.mean,
                                cfg.data.std, device, dist.rank, dist.world)
    images = dataset.test if split == "test" else dataset.val
    if images is None:
        return None
    return folder_eval_loader(images, cfg.eval_batch_size, cfg.data, cfg.recipe, cfg.workers,
                              dist.rank, dist.world)


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
    train_batches: Any
    eval_batches: Any
    """The test set's batches: reported, never used to choose anything."""
    val_batches: Any
    """The validation split's batches (None without one): what choices are made on."""
    n_train: int
    steps_per_epoch: int
    total_batch: int
    lr: float


def prepare(cfg: DictConfig, dist: Dist) -> Run:
    """Check ``cfg``, then load the data and build model, loaders, optimizer and schedule for
    this process. Everything that can be wrong with the config or the data fails here, before
    training."""
    step = get_step(cfg.step_name, cfg.ladder.name)
    mcfg = model_config(cfg, scaled=True)
    device = resolve_device(cfg.device, dist.local_rank)
    setup_distributed(dist, device)
    dtype = resolve_precision(cfg.precision, device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    batch_size, accum = resolve_batch(cfg.batch_size, cfg.accum_steps, cfg.total_batch,
                                      dist.world)
    dataset = load_dataset(cfg.data)

    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    params, gflops = count_params(model), count_gflops(model, cfg.data.image_size, mcfg.in_chans)
    model = model.to(device, memory_format=memory_format(channels_last))
    batches = train_loader(cfg, dataset, mcfg.num_classes, device, dist, batch_size)
    steps_per_epoch = len(batches) // accum
    if steps_per_epoch < 1:
        raise RunError(f"an epoch has {len(batches)} batches, fewer than accum_steps="
                       f"{accum}; lower batch_size or accum_steps")
    total_batch = batch_size * accum * dist.world
    lr = cfg.lr if cfg.lr is not None else cfg.recipe.lr * total_batch / cfg.recipe.lr_batch
    stepper = make_stepper(cfg, model, device, dist, dtype, channels_last, accum, lr,
                           steps_per_epoch)
    n_train = (len(dataset.train_labels) if isinstance(dataset, MemoryDataset)
               else len(dataset.train))
    return Run(step, dist, device, mcfg, model, params, gflops, stepper, batches,
               eval_loader(cfg, dataset, device, dist), eval_loader(cfg, dataset, device, dist,
                                                                    "val"),
               n_train, steps_per_epoch, total_batch, lr)


def make_stepper(cfg: DictConfig, model: nn.Module, device: torch.device, dist: Dist,
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
