"""Timing: the machine's peak and bandwidth, every step's training and inference speed, ours
against torchvision, and the data path's share of a training step.

A training step here is the one training runs (:class:`roadmap.train.loop.Stepper`), on models
and data paths built by the training setup (:mod:`roadmap.train.setup`).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from roadmap.bench.breakdown import breakdown
from roadmap.bench.pointwise import pointwise_rows
from roadmap.conf import compose, model_config
from roadmap.ladder import step_names
from roadmap.models import build_model, count_gflops, count_params
from roadmap.models.convert import to_torchvision
from roadmap.results.stats import ratio_interval
from roadmap.runtime import (
    autocast_factory,
    code_version,
    cpu_model,
    memory_format,
    resolve_channels_last,
    resolve_device,
    sync,
    timed,
)
from roadmap.train.loop import Stepper
from roadmap.train.optim import can_fuse


def machine() -> dict:
    info = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def memory_bandwidth(device: torch.device, repeats: int) -> float:
    """Bytes/s of copying a 256 MiB buffer (read + write), the best of ``repeats``."""
    src = torch.empty(64 * 2 ** 20, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(timed(lambda: dst.copy_(src), 3, device) for _ in range(repeats))
    return 2 * src.numel() * src.element_size() / best


def peak_flops(device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of a large square matrix multiply (the best of ``repeats``)."""
    n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, 3, device) for _ in range(repeats))
    return 2 * n ** 3 / best


class Bench:
    """Training and inference steps of one model on one fixed batch, with AdamW (fused where
    it can be, as training does) for every step alike."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast,
                 channels_last: bool, compile_: bool) -> None:
        fmt = memory_format(channels_last)
        self.model = model.to(x.device, memory_format=fmt)
        self.x = x.contiguous(memory_format=fmt)
        self.y, self.autocast = y, autocast
        net = torch.compile(self.model) if compile_ else self.model
        opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4,
                                fused=can_fuse(self.model) or None)
        self.stepper = Stepper(self.model, opt, net, autocast=autocast)

    def forward_backward(self) -> None:
        self.model.train()
        self.stepper.forward_backward(self.x, self.y)

    def optimizer_step(self) -> None:
        self.stepper.optimizer_step()

    def train_step(self) -> None:
        self.forward_backward()
        self.optimizer_step()

    @torch.no_grad()
    def infer_step(self) -> None:
        self.model.eval()
        with self.autocast():
            self.stepper.net(self.x)


def measure(benches: list[Bench], steps: int, repeats: int, warmup: int,
            device: torch.device) -> list[dict[str, list[float]]]:
    """Seconds per step of every bench, interleaved repeat by repeat."""
    for b in benches:
        for _ in range(warmup):
            b.train_step()
            b.infer_step()
    times = [{"train": [], "infer": []} for _ in benches]
    for _ in range(repeats):
        for kind in ("train", "infer"):
            total = [0.0] * len(benches)
            for s in range(steps):
                # step by step, alternating who goes first: paired models see the same moments
                # of a noisy machine, and neither always inherits the other's cache state
                order = list(enumerate(benches))
                for i, b in order if s % 2 == 0 else order[::-1]:
                    total[i] += timed(b.train_step if kind == "train" else b.infer_step, 1,
                                      device)
            for t, seconds in zip(times, total, strict=True):
                t[kind].append(seconds / steps)
    return times


def torchvision_name(cfg) -> str:
    if cfg.stem == "resnet":
        return f"resnet{2 + 3 * sum(cfg.depths)}"
    return "convnext_" + {96: "tiny", 128: "base"}.get(cfg.width, f"w{cfg.width}")


@dataclass
class Settings:
    """A benchmark run's resolved settings and its fixed input batch."""

    own: dict[str, str]
    overrides: list[str]
    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    compile_: bool
    steps: int
    repeats: int
    warmup: int
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @property
    def autocast(self) -> Callable:
        return autocast_factory(self.dtype, self.device)

    def compose(self, step: str, *extra: str):
        return compose([f"ladder={self.own['ladder']}", f"step={step}",
                        f"preset={self.own['preset']}", "logger=none", *self.overrides, *extra])


def settings(own: dict[str, str], overrides: list[str]) -> Settings:
    device = resolve_device(own["device"])
    extra = list(overrides)
    if own["image_size"]:
        extra.append(f"data.image_size={own['image_size']}")
    if own["batch_size"]:
        extra.append(f"batch_size={own['batch_size']}")
    s = Settings(own, extra, device, torch.bfloat16 if own["dtype"] == "bf16" else None,
                 resolve_channels_last({"true": True, "false": False}.get(
                     own["channels_last"], "auto"), device),
                 own["compile"] == "true", int(own["steps"]), int(own["repeats"]),
                 int(own["warmup"]))
    cfg0 = s.compose(step_names(own["ladder"])[0])
    size, batch = cfg0.data.image_size, cfg0.batch_size
    s.x = torch.randn(batch, cfg0.model.in_chans, size, size, device=device)
    s.y = torch.randint(0, cfg0.model.num_classes, (batch,), device=device)
    return s


def step_row(s: Settings, step: str, peak: float) -> dict:
    """One ladder step at the preset's scale: images/s and the share of the peak."""
    mcfg = model_config(s.compose(step), scaled=True)
    model = build_model(mcfg)
    batch, size = s.x.shape[0], s.x.shape[-1]
    macs = count_gflops(model, size, mcfg.in_chans, convention="macs") * 1e9
    bench = Bench(model, s.x, s.y, s.autocast, s.channels_last, s.compile_)
    t = measure([bench], s.steps, s.repeats, s.warmup, s.device)[0]
    train_ips = batch / statistics.median(t["train"])
    row = {"step": step, "params": count_params(model), "gmacs": macs / 1e9,
           "train_images_per_s": train_ips,
           "infer_images_per_s": batch / statistics.median(t["infer"]),
           "train_flops_per_s": 3 * 2 * macs * train_ips,
           "peak_fraction": 3 * 2 * macs * train_ips / peak}
    if s.own["breakdown"] == "true":
        row["breakdown"] = breakdown(bench, s.device, s.steps)
    print(f"{step:22s} train {train_ips:8.1f} img/s  infer {row['infer_images_per_s']:8.1f} "
          f"img/s  {100 * row['peak_fraction']:.1f}% of peak", file=sys.stderr)
    return row


def full_size(s: Settings, step: str) -> nn.Module:
    """``step``'s network at full size (the paper's: layer scale, no stochastic depth) with the
    preset's classes and input channels."""
    cfg = s.compose(step)
    full = compose([f"ladder={s.own['ladder']}", f"step={step}", "protocol=paper",
                    f"model.num_classes={cfg.model.num_classes}",
                    f"model.in_chans={cfg.model.in_chans}", "model.drop_path_rate=0"])
    return build_model(model_config(full))


def versus_torchvision(s: Settings, step: str) -> dict:
    """Ours against torchvision at full size, same classes/channels/resolution, alternating
    (the paper's protocol: the network torchvision has, layer scale included)."""
    ours = full_size(s, step)
    theirs = to_torchvision(ours)
    pair = [Bench(ours, s.x, s.y, s.autocast, s.channels_last, s.compile_),
            Bench(theirs, s.x, s.y, s.autocast, s.channels_last, s.compile_)]
    t_ours, t_tv = measure(pair, s.steps, int(s.own["pairs"]), s.warmup, s.device)
    batch = s.x.shape[0]
    record = {"step": step, "torchvision": torchvision_name(ours.cfg),
              "params": count_params(ours)}
    for kind in ("train", "infer"):
        record[f"{kind}_ours"] = batch / statistics.median(t_ours[kind])
        record[f"{kind}_torchvision"] = batch / statistics.median(t_tv[kind])
        (record[f"{kind}_ratio"], record[f"{kind}_ratio_low"],
         record[f"{kind}_ratio_high"]) = ratio_interval(t_ours[kind], t_tv[kind])
    if s.own["breakdown"] == "true":  # one more step each: where their times differ
        for who, bench in zip(("ours", "torchvision"), pair, strict=True):
            record[f"breakdown_{who}"] = breakdown(bench, s.device, 1)
        # the most the ratio can be while ours runs the same matmuls: all else of ours free
        record["train_ratio_ceiling"] = (record["train_ratio"]
                                         / record["breakdown_ours"]["dense"]["share"])
    if s.device.type == "cuda":  # one more training step each, alone: its peak memory
        for who, bench in zip(("ours", "torchvision"), pair, strict=True):
            torch.cuda.reset_peak_memory_stats(s.device)
            bench.train_step()
            torch.cuda.synchronize(s.device)
            record[f"train_peak_mb_{who}"] = torch.cuda.max_memory_allocated(s.device) / 2**20
    print(f"{step:22s} ours/torchvision: train {record['train_ratio']:.3f} "
          f"[{record['train_ratio_low']:.3f}, {record['train_ratio_high']:.3f}], infer "
          f"{record['infer_ratio']:.3f} [{record['infer_ratio_low']:.3f}, "
          f"{record['infer_ratio_high']:.3f}]", file=sys.stderr)
    return record


def run(own: dict[str, str], overrides: list[str]) -> dict:
    """Every measurement of one benchmark run, as one JSON-ready record."""
    s = settings(own, overrides)
    peak = peak_flops(s.device, s.dtype or torch.float32, s.repeats)
    bandwidth = memory_bandwidth(s.device, s.repeats)
    names = step_names(own["ladder"])
    rows, versus, pointwise, data_rows, augment = [], [], [], [], {}
    if own["models"] == "true":
        rows = [step_row(s, step, peak) for step in (own["only"].split(",") if own["only"]
                                                      else names)]
        versus = [versus_torchvision(s, step) for step in (names[0], names[-1])]
    if own["models"] == "true" and own["pointwise"] == "true":
        pointwise = pointwise_rows({step: full_size(s, step) for step in (names[0], names[-1])},
                                   s.x, int(own["pairs"]))
    if own["data"] == "true":
        for preset in ("cpu", "cifar10"):
            data_rows += data_share(preset, own["ladder"], s)
    if own["augment"] == "true":
        augment = full_recipe_data_path(own["ladder"], s)
    return {"name": own["name"] or f"{own['preset']}-{s.x.shape[-1]}px", "machine": machine(),
            "device": str(s.device), "dtype": own["dtype"], "channels_last": s.channels_last,
            "compile": s.compile_, "preset": own["preset"], "image_size": s.x.shape[-1],
            "batch": s.x.shape[0], "steps": s.steps, "repeats": s.repeats,
            "pairs": int(own["pairs"]), "peak_flops_per_s": peak,
            "bandwidth_bytes_per_s": bandwidth, "steps_table": rows,
            "versus_torchvision": versus, "pointwise": pointwise, "data_path": data_rows,
            "augment": augment,
            "commit": code_version()}


def full_recipe_data_path(ladder: str, s: Settings) -> dict:
    """Batched against per-image augmentation with the whole recipe, and the batched path's
    share of a cpu-preset training step with it (see :mod:`roadmap.bench.augment`)."""
    from roadmap.bench.augment import FULL_RECIPE, augment_rows, folder_rows

    dataset, source = bench_dataset(compose(["step=resnet50", "preset=cpu", "logger=none"]))
    return {"source": source, "versions": augment_rows(dataset, int(s.own["pairs"])),
            "share": data_share("cpu", ladder, s, FULL_RECIPE),
            "folders": [folder_rows(workers) for workers in (1, 2)]}


def bench_dataset(cfg):
    """The preset's data set, or generated images of its size where its files are not here."""
    from omegaconf import OmegaConf

    from roadmap.train.data import DataError, load_dataset, make_synthetic

    try:
        return load_dataset(cfg.data), cfg.data.name
    except DataError:  # e.g. CIFAR offline: its size and pipeline on generated images
        fake = OmegaConf.create({**OmegaConf.to_container(cfg.data),
                                 "train_size": 10 * cfg.batch_size,
                                 "test_size": cfg.batch_size, "noise": 0.3})
        return (make_synthetic(fake),
                f"generated images of {cfg.data.name}'s size (its files are not here)")


def data_share(preset: str, ladder: str, s: Settings, extra: Sequence[str] = ()) -> list[dict]:
    """Share of a training step spent getting and augmenting the batch, at both ends, with the
    data path and model that training builds (``extra``: overrides, e.g. the whole recipe), at
    the preset's batch or the bench's ``batch_size=`` when given."""
    from roadmap import conf
    from roadmap.runtime import Dist
    from roadmap.train.setup import run_model

    rows = []
    if s.own["batch_size"]:
        extra = [*extra, f"batch_size={s.own['batch_size']}"]
    for step in (step_names(ladder)[0], step_names(ladder)[-1]):
        cfg = compose([f"ladder={ladder}", f"step={step}", f"preset={preset}", "logger=none",
                       *extra])
        dataset, source = bench_dataset(cfg)
        typed = conf.settings(cfg)
        loader = dataset.train_batches(typed, typed.batch_size, s.device, Dist())
        channels_last = resolve_channels_last(typed.channels_last, s.device)
        model = run_model(typed.network(), s.device, channels_last)
        opt = torch.optim.AdamW(model.parameters(), fused=can_fuse(model) or None)
        stepper = Stepper(model, opt, label_smoothing=cfg.recipe.label_smoothing,
                          channels_last=channels_last)
        data_t, step_t = timed_data_steps(loader, stepper, s.device, s.warmup,
                                          s.steps * s.repeats)
        images = cfg.batch_size * len(data_t)  # over whole chunks: means, not medians
        rows.append({"preset": preset, "step": step, "source": source,
                     "batch": cfg.batch_size, "augment_batches": getattr(loader, "chunk", 1),
                     "data_share": sum(data_t) / sum(step_t),
                     "data_images_per_s": images / sum(data_t),
                     "step_images_per_s": images / sum(step_t)})
        print(f"data {preset:8s} {step:22s} {100 * rows[-1]['data_share']:.1f}% of a step, "
              f"data path {rows[-1]['data_images_per_s']:.0f} img/s", file=sys.stderr)
    return rows


def timed_data_steps(loader, stepper: Stepper, device: torch.device, warmup: int,
                     n: int) -> tuple[list, list]:
    """Seconds of each step spent getting the batch, and of each whole training step. An
    in-memory loader augments ``chunk`` batches at a time: the warm-up and the timed steps
    are whole chunks (rounded up), so each chunk's cost is counted once, in full."""
    chunk = getattr(loader, "chunk", 1)
    warmup, n = -(-warmup // chunk) * chunk, -(-n // chunk) * chunk
    batches, epoch = loader.epoch(0), 0
    data_t, step_t = [], []
    stepper.model.train()
    for i in range(warmup + n):
        t0 = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            epoch += 1
            batches = loader.epoch(epoch)
            x, y = next(batches)
        if stepper.channels_last:  # the layout change is the data path's, as in training
            x = x.contiguous(memory_format=torch.channels_last)
        sync(device)
        t1 = time.perf_counter()
        stepper.train_step(x, y)
        sync(device)
        if i >= warmup:
            data_t.append(t1 - t0)
            step_t.append(time.perf_counter() - t0)
    return data_t, step_t
