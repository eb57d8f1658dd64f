"""One run, start to end: :func:`train` (skip, resume, train, evaluate, checkpoint, record).

Each run directory holds Hydra's ``.hydra/``, the run's ``config.json`` (what it computes),
``metrics.json``, per-epoch ``epochs.jsonl``, ``last.pt`` and ``.lock`` (see
:mod:`roadmap.train.rundir`). Rerunning the same command resumes from ``last.pt``; a completed
run of the same config is skipped. Under ``torchrun`` every process trains its shard and only
rank 0 writes.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from roadmap.runtime import Dist, RunError, code_version
from roadmap.train.checkpoint import (
    Progress,
    checkpoint_state,
    load_checkpoint,
    restore,
    run_config,
    save_checkpoint,
    write_json,
)
from roadmap.train.loop import Diverged, EpochStats, evaluate, train_epoch
from roadmap.train.rundir import CHECKPOINT, METRICS, RunDir
from roadmap.train.setup import Run, check_values, prepare
from roadmap.train.tracking import make_tracker


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def seed_everything(seed: int) -> None:
    """torch's, Python's and NumPy's generators (timm's Mixup draws from NumPy's)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def show_progress(setting: Any) -> bool:
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


def train(cfg: DictConfig, run_dir: str | Path,
          on_claim: Callable[[], None] | None = None) -> dict:
    """Train ``cfg``'s step in ``run_dir``: metrics. A completed run of the same config is
    returned as it is; an unfinished one resumes from ``last.pt``. A directory that another
    process is writing (:class:`RunLocked`) or that holds another config's run
    (:class:`RunRefused`) is refused before anything is written in it. ``on_claim`` runs once
    the directory is this run's (the entry point writes Hydra's files then)."""
    run_dir, dist = Path(run_dir), Dist.from_env()
    directory = RunDir(run_dir)
    if dist.main:
        directory.lock()
    try:
        config = run_config(cfg)
        directory.check_config(config)
        previous = directory.completed_metrics()
        if previous is not None:
            print(f"roadmap: {run_dir} already completed (top-1 {previous['top1']:.2f}); "
                  "skipping", file=sys.stderr)
            return previous
        if dist.main:
            directory.claim(config)
            if on_claim is not None:
                on_claim()
        return _recorded(cfg, run_dir, dist)
    finally:
        directory.unlock()


def _recorded(cfg: DictConfig, run_dir: Path, dist: Dist) -> dict:
    """Run, and record in ``metrics.json`` how it ended: completed, diverged or failed."""
    base = {"step": cfg.step_name, "ladder": cfg.ladder.name, "seed": cfg.seed,
            "preset": cfg.preset_name, "dataset": cfg.data.name, "recipe": cfg.recipe.name,
            "protocol": OmegaConf.to_container(cfg.protocol, resolve=True),
            "epochs": cfg.epochs, "scale": OmegaConf.to_container(cfg.scale, resolve=True)}
    started = time.time()
    try:
        return _train(cfg, run_dir, base, dist)
    except Diverged as exc:
        metrics = {**base, "status": "diverged", "error": str(exc),
                   "wall_s": time.time() - started}
        if dist.main:
            write_json(run_dir / METRICS, metrics)
        return metrics
    except BaseException as exc:
        if dist.main:
            record = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "wall_s": time.time() - started}
            try:
                write_json(run_dir / METRICS, record)
            except (OSError, RunError):  # e.g. the disk is full: the error itself is raised
                pass
        raise


def _train(cfg: DictConfig, run_dir: Path, base: dict, dist: Dist) -> dict:
    check_values(cfg)
    checkpoint = load_checkpoint(run_dir)
    run = prepare(cfg, dist)
    progress = restore(run, checkpoint) if checkpoint is not None else Progress()
    main = run.dist.main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # the per-epoch log always agrees with the checkpoint it resumes from
        (run_dir / "epochs.jsonl").write_text(
            "".join(json.dumps(h) + "\n" for h in progress.history))
    tracker = make_tracker(cfg.logger, OmegaConf.to_container(cfg, resolve=True), run_dir,
                           f"{cfg.step_name}-seed{cfg.seed}", progress.run_id, main)
    progress.run_id = tracker.run_id
    tracker.summary({"params": run.params, "gflops": run.gflops})
    if main:
        print(f"roadmap: {cfg.ladder.name}/{cfg.step_name} seed {cfg.seed} on {run.device} "
              f"(x{run.dist.world}): {run.params:,} params, {run.gflops:.4f} GFLOPs at "
              f"{cfg.data.image_size}px, lr {run.lr:.3g}, total batch {run.total_batch}"
              + (f", resuming at epoch {progress.epoch}" if progress.epoch else ""),
              file=sys.stderr)
    session_start, wall_before = time.time(), progress.wall_s
    for epoch in range(progress.epoch, cfg.epochs):
        record = run_epoch(cfg, run, epoch, progress)
        progress.history.append(record)
        progress.epoch = epoch + 1
        progress.wall_s = wall_before + time.time() - session_start
        tracker.log(record, step=epoch + 1)
        if main:
            log_epoch(cfg, run, run_dir, record, progress)
    metrics = final_metrics(cfg, run, base, progress)
    metrics["wall_s"] = wall_before + time.time() - session_start
    tracker.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    tracker.finish()
    if main:
        write_json(run_dir / METRICS, metrics)
    return metrics


def run_epoch(cfg: DictConfig, run: Run, epoch: int, progress: Progress) -> dict:
    """Train one epoch, evaluate, and return the epoch's record."""
    seed_everything(epoch_seed(cfg.seed, epoch) * 1000 + run.dist.rank)
    s, world = run.stepper, run.dist.world
    bar, on_step = progress_bar(cfg, run, epoch)
    stats = train_epoch(s, run.train_batches.epoch(epoch_seed(cfg.seed, epoch)),
                        run.steps_per_epoch * s.accum, epoch, on_step)
    if bar is not None:
        bar.close()
    progress.train_seconds += stats.seconds
    progress.train_images += stats.images * world
    results = evaluate(s.net, run.eval_batches, run.device, run.dist, s.autocast)
    record = {"epoch": epoch + 1, "train_loss": stats.loss}
    if run.val_batches is not None:
        val = evaluate(s.net, run.val_batches, run.device, run.dist, s.autocast)
        record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
    record.update(test_loss=results["loss"], top1=results["top1"], top5=results["top5"],
                  lr=s.optimizer.param_groups[0]["lr"],
                  train_images_per_s=stats.images * world / stats.seconds,
                  epoch_s=stats.seconds)
    if hasattr(run.train_batches, "skipped"):
        record["skipped_images"] = run.train_batches.skipped
    if s.ema is not None:
        ema_results = evaluate(s.ema.module, run.eval_batches, run.device, run.dist, s.autocast)
        record.update({f"ema_{k}": v for k, v in ema_results.items()})
    return record


def progress_bar(cfg: DictConfig, run: Run, epoch: int):
    """A tqdm bar for the epoch (when ``progress`` asks for one) and its per-step update."""
    if not (show_progress(cfg.progress) and run.dist.main):
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               dynamic_ncols=True)

    def on_step(stats: EpochStats) -> None:
        bar.set_postfix(loss=f"{stats.loss:.3f}",
                        lr=f"{run.stepper.optimizer.param_groups[0]['lr']:.2e}",
                        img_s=f"{stats.images * run.dist.world / max(stats.seconds, 1e-9):.0f}")
        bar.update()

    return bar, on_step


def log_epoch(cfg: DictConfig, run: Run, run_dir: Path, record: dict,
              progress: Progress) -> None:
    """Print the epoch, checkpoint it when due, append it to ``epochs.jsonl`` (rank 0)."""
    epoch = record["epoch"]
    val = f"val top-1 {record['val_top1']:.2f}, " if "val_top1" in record else ""
    print(f"epoch {epoch}/{cfg.epochs}: train loss {record['train_loss']:.4f}, {val}"
          f"test top-1 {record['top1']:.2f}, top-5 {record['top5']:.2f} "
          f"({record['train_images_per_s']:.0f} img/s)", file=sys.stderr)
    if epoch == cfg.epochs or epoch % cfg.checkpoint_every == 0:
        save_checkpoint(run_dir / CHECKPOINT, checkpoint_state(run, cfg, progress))
    with open(run_dir / "epochs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def final_metrics(cfg: DictConfig, run: Run, base: dict, progress: Progress) -> dict:
    final = progress.history[-1] if progress.history else {}
    metrics = {
        **base, "status": "completed",
        "val_top1": final.get("val_top1"), "val_top5": final.get("val_top5"),
        "val_loss": final.get("val_loss"),
        "top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("test_loss"),
        "train_loss": final.get("train_loss"),
        "params": run.params, "gflops": run.gflops, "image_size": cfg.data.image_size,
        "paper_gflops": run.step.paper_gflops, "paper_top1": run.step.paper_top1,
        "train_images_per_s": (progress.train_images / progress.train_seconds
                               if progress.train_seconds else None),
        "wall_s": progress.wall_s,
        "epochs": cfg.epochs, "lr": run.lr, "total_batch": run.total_batch,
        "n_train": run.n_train, "world_size": run.dist.world, "device": str(run.device),
        "torch": torch.__version__, "commit": code_version(),
        "model": OmegaConf.to_container(OmegaConf.structured(run.model_cfg)),
    }
    if run.stepper.ema is not None and final:
        metrics.update({"ema_top1": final["ema_top1"], "ema_top5": final["ema_top5"]})
    return metrics
