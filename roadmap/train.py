"""Train one step of a ladder: ``python -m roadmap.train step=<name> [preset=...] [seed=N] [...]``.

A thin ``@hydra.main`` around :func:`train`, which tests call in-process. Each run directory
(``runs/<ladder>/<preset>/<step>[,overrides]/seed<N>``) holds Hydra's ``.hydra/``, the run's
``metrics.json``, per-epoch ``epochs.jsonl`` and ``last.pt``. Rerunning the same command resumes
from ``last.pt``; a completed run is skipped. Under ``torchrun`` every process trains its shard
and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from roadmap.augment import BatchAugment
from roadmap.conf import check_config, model_config, register_configs
from roadmap.data import DataError, MemoryDataset, load_dataset
from roadmap.flops import count_gflops, count_params
from roadmap.ladder import get_step
from roadmap.loaders import (
    FolderTrainLoader,
    MemoryEvalLoader,
    MemoryTrainLoader,
    folder_eval_loader,
)
from roadmap.models import ConfigError, build_model, scale_config
from roadmap.optim import Schedule, build_optimizer, build_scheduler
from roadmap.tracking import make_tracker

register_configs()

# config keys that may differ when a run resumes (how it runs, not what it computes)
VOLATILE_KEYS = ("progress", "device", "workers", "logger", "checkpoint_every", "eval_batch_size")


class RunError(RuntimeError):
    """A run cannot start; the message says why and how to fix it."""


class Diverged(RuntimeError):
    pass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.tolist()


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Process group from torchrun's environment (gloo on CPU, nccl on CUDA) and the device.

    Under SLURM with several tasks (hydra/launcher=slurm) submitit's environment supplies
    the torchrun variables."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name not in ("cpu", "cuda"):
        raise RunError(f"device={device_name} is invalid; valid values: auto, cpu, cuda")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise RunError("device=cuda but no CUDA device is visible; use device=cpu or auto")
    device = torch.device("cuda", local) if device_name == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


# -- helpers ------------------------------------------------------------------------------------

def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write then rename, so that a kill leaves the previous checkpoint whole."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def comparable(cfg: DictConfig) -> dict:
    """The config minus what may change between a run and its resumption."""
    values = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        values.pop(key, None)
    return values


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in choices:
        raise RunError(f"precision={precision} is invalid; valid values: auto, fp32, bf16, fp16")
    return choices[precision]


def resolve_channels_last(value, device: torch.device) -> bool:
    """``auto``: channels-last on CPU and CUDA. On a 2-core CPU (``python -m roadmap.bench
    channels_last=false`` against ``=true``, README) the steps train 1.2-2.8x faster in it,
    the BatchNorm depthwise steps most."""
    if value == "auto":
        return device.type in ("cpu", "cuda")
    if isinstance(value, bool):
        return value
    raise RunError(f"channels_last={value} is invalid; valid values: auto, true, false")


def resolve_accumulation(cfg: DictConfig, world: int) -> int:
    if cfg.total_batch is None:
        if cfg.accum_steps < 1:
            raise RunError(f"accum_steps={cfg.accum_steps} is invalid: must be >= 1")
        return int(cfg.accum_steps)
    per_step = cfg.batch_size * world
    if cfg.total_batch % per_step:
        raise RunError(f"total_batch={cfg.total_batch} is not a multiple of batch_size x "
                       f"processes = {per_step}; change batch_size or the number of GPUs")
    return cfg.total_batch // per_step


def show_progress(setting: Any) -> bool:
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, dist: Dist,
             autocast) -> dict[str, float]:
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0.0, 0.0, 0.0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == y[:, None]
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        count += len(y)
    loss_sum, top1, top5, count = dist.all_sum([loss_sum, top1, top5, count], device)
    return {"loss": loss_sum / count, "top1": 100 * top1 / count, "top5": 100 * top5 / count}


# -- the run ------------------------------------------------------------------------------------

def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train ``cfg``'s step in ``run_dir`` (resuming it if it holds a ``last.pt``): metrics."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        previous = json.loads(metrics_path.read_text())
        if previous.get("status") == "completed":
            print(f"roadmap: {run_dir} already completed (top-1 {previous.get('top1'):.2f}); "
                  "skipping", file=sys.stderr)
            return previous
    dist = Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))
    base = {"step": cfg.step_name, "ladder": cfg.ladder.name, "seed": cfg.seed,
            "preset": cfg.preset_name, "dataset": cfg.data.name, "recipe": cfg.recipe.name}
    started = time.time()
    try:
        return _train(cfg, run_dir, base)
    except Diverged as exc:
        metrics = {**base, "status": "diverged", "error": str(exc),
                   "wall_s": time.time() - started}
        if dist.main:
            write_json(metrics_path, metrics)
        return metrics
    except BaseException as exc:
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(metrics_path, {**base, "status": "failed",
                                      "error": f"{type(exc).__name__}: {exc}",
                                      "wall_s": time.time() - started})
        raise


def _train(cfg: DictConfig, run_dir: Path, base: dict) -> dict:
    # everything that can be wrong with the config or the data fails here, before training
    check_config(cfg)
    step = get_step(cfg.step_name, cfg.ladder.name)
    dist, device = setup_distributed(cfg.device)
    checkpoint_path = run_dir / "last.pt"
    checkpoint = None
    if checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        stored = json.loads(checkpoint["config"])
        changed = diff_keys(stored, comparable(cfg))
        if changed:
            raise RunError(f"{run_dir} holds a run with another config (differs in "
                           f"{', '.join(changed[:5])}); choose another hydra.run.dir or remove "
                           "that directory")
    dtype = resolve_precision(cfg.precision, device)
    accum = resolve_accumulation(cfg, dist.world)
    dataset = load_dataset(cfg.data, cfg.recipe)
    mcfg = scale_config(model_config(cfg), cfg.scale.width, cfg.scale.depth)

    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    params = count_params(model)
    gflops = count_gflops(model, cfg.data.image_size, mcfg.in_chans)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    model = model.to(device, memory_format=torch.channels_last if channels_last else
                     torch.contiguous_format)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.recipe.ema_decay),
                         use_buffers=True) if cfg.recipe.ema else None)

    # data
    if isinstance(dataset, MemoryDataset):
        augment = BatchAugment(cfg.data, cfg.recipe, mcfg.num_classes)
        train_loader = MemoryTrainLoader(dataset, cfg.batch_size, augment, device, dist.rank,
                                         dist.world)
        eval_batches = MemoryEvalLoader(dataset, cfg.eval_batch_size, cfg.data.mean,
                                        cfg.data.std, device, dist.rank, dist.world)
        n_train = len(dataset.train_labels)
    else:
        train_loader = FolderTrainLoader(dataset, cfg.batch_size, cfg.recipe, mcfg.num_classes,
                                         device, cfg.workers, dist.rank, dist.world)
        eval_batches = folder_eval_loader(dataset, cfg.eval_batch_size, cfg.workers, dist.rank,
                                          dist.world)
        n_train = len(dataset.train)
    steps_per_epoch = len(train_loader) // accum
    if steps_per_epoch < 1:
        raise RunError(f"an epoch has {len(train_loader)} batches, fewer than accum_steps="
                       f"{accum}; lower batch_size or accum_steps")

    total_batch = cfg.batch_size * accum * dist.world
    lr = cfg.lr if cfg.lr is not None else cfg.recipe.lr * total_batch / cfg.recipe.lr_batch
    optimizer = build_optimizer(model, cfg.recipe, lr)
    schedule = Schedule(cfg.recipe, cfg.epochs, steps_per_epoch, lr)
    scheduler = build_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    start_epoch, history, run_id = 0, [], None
    train_seconds, train_images, wall_before = 0.0, 0, 0.0
    if checkpoint is not None:
        unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None and checkpoint.get("ema") is not None:
            ema.load_state_dict(checkpoint["ema"])
        start_epoch, history = checkpoint["epoch"], list(checkpoint["history"])
        train_seconds, train_images = checkpoint["train_seconds"], checkpoint["train_images"]
        wall_before, run_id = checkpoint["wall_s"], checkpoint.get("run_id")

    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # the per-epoch log always agrees with the checkpoint it resumes from
        (run_dir / "epochs.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    tracker = make_tracker(
        cfg.logger, OmegaConf.to_container(cfg, resolve=True), run_dir,
        f"{cfg.step_name}-seed{cfg.seed}", run_id, dist.main)
    tracker.summary({"params": params, "gflops": gflops})
    show = show_progress(cfg.progress) and dist.main
    info = (f"roadmap: {cfg.ladder.name}/{cfg.step_name} seed {cfg.seed} on {device} "
            f"(x{dist.world}): {params:,} params, {gflops:.4f} GFLOPs at "
            f"{cfg.data.image_size}px, lr {lr:.3g}, total batch {total_batch}")
    if dist.main:
        print(info + (f", resuming at epoch {start_epoch}" if start_epoch else ""),
              file=sys.stderr)

    session_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch) * 1000 + dist.rank)
        net.train()
        loss_sum, loss_count, images, t0 = 0.0, 0, 0, time.perf_counter()
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       leave=False, dynamic_ncols=True)
        optimizer.zero_grad(set_to_none=True)
        batches = train_loader.epoch(epoch_seed(cfg.seed, epoch))
        for i, (x, y) in enumerate(batches):
            if i >= steps_per_epoch * accum:
                break
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            boundary = (i + 1) % accum == 0
            sync = boundary or dist.world == 1
            ctx = contextlib.nullcontext() if sync else net.no_sync()
            with ctx, autocast():
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y,
                                       label_smoothing=cfg.recipe.label_smoothing)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"loss is {value} at epoch {epoch + 1}, batch {i + 1}")
            with ctx:
                scaler.scale(loss / accum).backward()
            if boundary:
                if cfg.recipe.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.recipe.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
            loss_sum, loss_count, images = loss_sum + value, loss_count + 1, images + len(x)
            if bar is not None and boundary:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / loss_count:.3f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                img_s=f"{images * dist.world / elapsed:.0f}")
                bar.update()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        train_images += images * dist.world
        results = evaluate(net, eval_batches, device, dist, autocast)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(loss_count, 1),
                  "test_loss": results["loss"], "top1": results["top1"], "top5": results["top5"],
                  "lr": optimizer.param_groups[0]["lr"],
                  "train_images_per_s": images * dist.world / seconds, "epoch_s": seconds}
        if ema is not None:
            ema_results = evaluate(ema.module, eval_batches, device, dist, autocast)
            record.update({f"ema_{k}": v for k, v in ema_results.items()})
        history.append(record)
        tracker.log(record, step=epoch + 1)
        if dist.main:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
                  f"test top-1 {record['top1']:.2f}, top-5 {record['top5']:.2f} "
                  f"({record['train_images_per_s']:.0f} img/s)", file=sys.stderr)
            last = epoch + 1 == cfg.epochs
            if last or (epoch + 1) % cfg.checkpoint_every == 0:
                save_checkpoint(checkpoint_path, {
                    "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "rng": {"torch": torch.get_rng_state()}, "epoch": epoch + 1,
                    "history": history, "train_seconds": train_seconds,
                    "train_images": train_images,
                    "wall_s": wall_before + time.time() - session_start,
                    "config": json.dumps(comparable(cfg)), "run_id": tracker.run_id,
                    "model_config": OmegaConf.to_yaml(OmegaConf.structured(mcfg)),
                })
            with open(run_dir / "epochs.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    final = history[-1] if history else {}
    metrics = {
        **base, "status": "completed",
        "top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("test_loss"),
        "train_loss": final.get("train_loss"),
        "params": params, "gflops": gflops, "image_size": cfg.data.image_size,
        "paper_gflops": step.paper_gflops, "paper_top1": step.paper_top1,
        "train_images_per_s": train_images / train_seconds if train_seconds else None,
        "wall_s": wall_before + time.time() - session_start,
        "epochs": cfg.epochs, "lr": lr, "total_batch": total_batch, "n_train": n_train,
        "world_size": dist.world, "device": str(device), "torch": torch.__version__,
        "model": OmegaConf.to_container(OmegaConf.structured(mcfg)),
    }
    if ema is not None and final:
        metrics.update({"ema_top1": final["ema_top1"], "ema_top5": final["ema_top5"]})
    tracker.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    tracker.finish()
    if dist.main:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def run_from_cli(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    # in a sweep, a run that fails raises: Hydra runs the other jobs, then the sweep exits non-zero
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

    hydra.main(version_base="1.3", config_path="../conf", config_name="config")(run_from_cli)()


if __name__ == "__main__":
    main()
