"""One run, start to end: :func:`train` (check, skip, resume, train, evaluate, checkpoint,
record).

Every value is checked before any work (a bad one is recorded as a failed run). The run
directory's files belong to :class:`roadmap.rundir.RunDir`: rerunning the same command resumes
from its checkpoint; a completed run of the same config is skipped. Under ``torchrun`` every
process trains its shard and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from roadmap.conf import settings
from roadmap.errors import RunError
from roadmap.models.net import pointwise_kernels
from roadmap.rundir import IDENTITY, RunDir, RunRecord, recorded_config
from roadmap.runtime import (
    Dist,
    code_version,
    cpu_kernels,
    cpu_model,
    resolve_channels_last,
    resolve_device,
    use_threads,
)
from roadmap.schema import TrainConfig
from roadmap.train.loop import Diverged, EpochStats, evaluate, train_epoch
from roadmap.train.setup import Run, prepare
from roadmap.train.state import Progress, restore, state
from roadmap.train.tracking import make_tracker


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def seed_everything(seed: int) -> None:
    """torch's, Python's and NumPy's generators (timm's Mixup draws from NumPy's)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def show_progress(setting: str | bool) -> bool:
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


def train(cfg: DictConfig, run_dir: str | Path,
          on_claim: Callable[[], None] | None = None) -> dict:
    """Train ``cfg``'s step in ``run_dir``: the record of how it ended (as stored). A completed
    run of the same config is returned as it is; an unfinished one resumes from its
    checkpoint. A directory that another
    process is writing (:class:`~roadmap.rundir.RunLocked`) or that holds another config's run
    (:class:`~roadmap.rundir.RunRefused`) is refused before anything is written in it.
    ``on_claim`` runs once the directory is this run's (the entry point writes Hydra's files
    then)."""
    directory, dist = RunDir(run_dir), Dist.from_env()
    if dist.main:
        directory.lock()
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
        config = recorded_config(values)
        directory.check_config(config)
        previous = directory.completed()
        if previous is not None:
            print(f"roadmap: {directory.path} already completed (top-1 {previous.top1:.2f}); "
                  "skipping", file=sys.stderr)
            return previous.to_json()
        if dist.main:
            directory.claim(config)
            if on_claim is not None:
                on_claim()
        return run_and_record(cfg, directory, dist, config, values).to_json()
    finally:
        directory.unlock()


CONFIG_KEYS = {"step": "step_name", "ladder": "ladder.name", "preset": "preset_name",
               "dataset": "data.name", "recipe": "recipe.name"}
"""Where the config holds the record's identity (:data:`roadmap.rundir.IDENTITY`) when not
under the same name."""


def identity(cfg: DictConfig) -> dict:
    """What a run's record says of the run, read from its config as composed (so that a run
    whose values fail their checks is recorded too)."""
    values = {k: OmegaConf.select(cfg, CONFIG_KEYS.get(k, k)) for k in IDENTITY}
    return {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
            for k, v in values.items()}


def run_and_record(cfg: DictConfig, directory: RunDir, dist: Dist, config: dict,
                   values: dict) -> RunRecord:
    """Check every value (:func:`roadmap.conf.settings`), run, and record how it ended:
    completed, diverged or failed (the error is raised). ``values``: the whole resolved config
    (what the tracker records), ``config``: what the run directory records of it."""
    started = time.time()
    try:
        return run_epochs(settings(cfg), directory, dist, config, values, identity(cfg))
    except KeyboardInterrupt:  # not an end: the run resumes from its checkpoint when rerun
        raise
    except Diverged as exc:
        record = RunRecord(identity(cfg), "diverged", {"wall_s": time.time() - started},
                           str(exc))
        if dist.main:
            directory.write_record(record)
        return record
    except BaseException as exc:
        if dist.main:
            record = RunRecord(identity(cfg), "failed", {"wall_s": time.time() - started},
                               f"{type(exc).__name__}: {exc}")
            try:
                directory.write_record(record)
            except (OSError, RunError):  # e.g. the disk is full: the error itself is raised
                pass
        raise


def run_epochs(cfg: TrainConfig, directory: RunDir, dist: Dist, config: dict,
               tracked: dict, named: dict) -> RunRecord:
    """Prepare the run, go on from its checkpoint if there is one, train the epochs left."""
    on_cpu = resolve_device(cfg.device, dist.local_rank).type == "cpu"
    pointwise = pointwise_kernels(cfg.network(), cfg.data.image_size, on_cpu,
                                  resolve_channels_last(cfg.channels_last, torch.device("cpu")))
    cpu = cpu_kernels(use_threads(cfg.threads), on_cpu, pointwise)
    checkpoint = directory.resume(config, cpu if on_cpu else None)
    run = prepare(cfg, dist)
    try:
        progress = restore(run, checkpoint) if checkpoint is not None else Progress()
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise directory.unfit_checkpoint(exc) from None
    main = run.dist.main
    if main:
        directory.start_epochs(progress.history)
    tracker = make_tracker(cfg.logger, tracked, directory.path,
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
            log_epoch(cfg, directory, record, lambda: state(run, config, progress, cpu))
    result = final_record(cfg, run, progress, named)
    result.metrics.update(cpu, cpu_model=cpu_model())
    result.metrics["wall_s"] = wall_before + time.time() - session_start
    tracker.summary({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    tracker.finish()
    if main:
        directory.write_record(result)
    return result


def run_epoch(cfg: TrainConfig, run: Run, epoch: int, progress: Progress) -> dict:
    """Train one epoch, evaluate, and return the epoch's record."""
    seed_everything(epoch_seed(cfg.seed, epoch) * 1000 + run.dist.rank)
    stepper, world = run.stepper, run.dist.world
    bar, on_step = progress_bar(cfg, run, epoch)
    stats = train_epoch(stepper, run.train_batches.epoch(epoch_seed(cfg.seed, epoch)),
                        run.steps_per_epoch * stepper.accum, epoch, on_step)
    if bar is not None:
        bar.close()
    progress.train_seconds += stats.seconds
    progress.train_images += stats.images * world
    results = evaluate(stepper.net, run.eval_batches, run.device, run.dist, stepper.autocast)
    record = {"epoch": epoch + 1, "train_loss": stats.loss}
    if run.val_batches is not None:
        val = evaluate(stepper.net, run.val_batches, run.device, run.dist, stepper.autocast)
        record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
        if val["skipped"]:
            record["skipped_val_images"] = val["skipped"]
    record.update(test_loss=results["loss"], top1=results["top1"], top5=results["top5"],
                  lr=stepper.optimizer.param_groups[0]["lr"],
                  train_images_per_s=stats.images * world / stats.seconds,
                  epoch_s=stats.seconds, skipped_images=run.train_batches.skipped)
    if results["skipped"]:
        record["skipped_test_images"] = results["skipped"]
    if stepper.ema is not None:
        ema_results = evaluate(stepper.ema.module, run.eval_batches, run.device, run.dist,
                               stepper.autocast)
        record.update({f"ema_{k}": v for k, v in ema_results.items() if k != "skipped"})
    return record


def progress_bar(cfg: TrainConfig, run: Run, epoch: int):
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


def log_epoch(cfg: TrainConfig, directory: RunDir, record: dict,
              checkpoint: Callable[[], dict]) -> None:
    """Print the epoch, save ``checkpoint()`` when due, add the epoch to the log (rank 0)."""
    epoch = record["epoch"]
    val = f"val top-1 {record['val_top1']:.2f}, " if "val_top1" in record else ""
    print(f"epoch {epoch}/{cfg.epochs}: train loss {record['train_loss']:.4f}, {val}"
          f"test top-1 {record['top1']:.2f}, top-5 {record['top5']:.2f} "
          f"({record['train_images_per_s']:.0f} img/s)", file=sys.stderr)
    due = epoch == cfg.epochs or epoch % cfg.checkpoint_every == 0
    directory.end_epoch(record, checkpoint() if due else None)


def final_record(cfg: TrainConfig, run: Run, progress: Progress, named: dict) -> RunRecord:
    final = progress.history[-1] if progress.history else {}
    metrics = {
        "val_top1": final.get("val_top1"), "val_top5": final.get("val_top5"),
        "val_loss": final.get("val_loss"),
        "top1": final.get("top1"), "top5": final.get("top5"), "loss": final.get("test_loss"),
        "train_loss": final.get("train_loss"),
        "params": run.params, "gflops": run.gflops, "image_size": cfg.data.image_size,
        "paper_gflops": run.step.paper_gflops, "paper_top1": run.step.paper_top1,
        "train_images_per_s": (progress.train_images / progress.train_seconds
                               if progress.train_seconds else None),
        "wall_s": progress.wall_s, "skipped_test_images": final.get("skipped_test_images", 0),
        "lr": run.lr, "total_batch": run.total_batch,
        "n_train": run.n_train, "world_size": run.dist.world, "device": str(run.device),
        "torch": torch.__version__, "commit": code_version(),
        "model": dataclasses.asdict(run.model_cfg), "data_source": run.data_source,
    }
    if run.stepper.ema is not None and final:
        metrics.update({"ema_top1": final["ema_top1"], "ema_top5": final["ema_top5"]})
    return RunRecord(named, "completed", metrics)
