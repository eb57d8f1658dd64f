"""``make bench``: every step's speed, against torchvision and against the machine's peak.

    python -m roadmap.bench [preset=cpu] [name=cpu-32px] [image_size=N] [batch_size=N]
        [steps=5] [repeats=5] [warmup=2] [dtype=fp32|bf16] [channels_last=auto] [compile=false]
        [device=auto] [ladder=resnet50] [only=resnet50,gelu] [data=true] [pairs=10]
        [breakdown=true] [out=benchmarks]

Measured on the current device after warm-up, as medians of ``repeats`` timings of ``steps``
steps each, for the preset's models (its width/depth scale), resolution and batch:

1. every step: training-step images/s (forward, backward, AdamW) and inference images/s;
2. step 0 and the last step against ``torchvision.models.resnet50`` and ``convnext_tiny`` built
   with the same settings (full size, the preset's classes, channels and resolution; ours at full
   size too), timed in the same process, interleaved, and the ratio ours / torchvision;
3. each step's achieved training FLOP/s (3 x forward FLOPs x images/s) against the peak of a
   large matrix multiply measured in the same run;
4. (``data=true``) for the ``cpu`` and ``cifar10`` presets: the share of a training step spent
   getting and augmenting the batch, and the data path's own images/s.

Each run writes ``<out>/<name>.json``; ``BENCHMARKS.md`` is rebuilt from every JSON in ``out``.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from roadmap.augment import BatchAugment
from roadmap.conf import compose, model_config
from roadmap.flops import count_gflops, count_params
from roadmap.ladder import step_names
from roadmap.models import build_model, scale_config
from roadmap.models.convert import to_torchvision
from roadmap.optim import can_fuse
from roadmap.train import resolve_channels_last

OWN_KEYS = {"preset": "cpu", "name": "", "image_size": "", "batch_size": "", "steps": "5",
            "repeats": "5", "warmup": "2", "dtype": "fp32", "channels_last": "auto",
            "compile": "false", "device": "auto", "ladder": "resnet50", "only": "",
            "data": "true", "out": "benchmarks", "pairs": "10", "breakdown": "true"}


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    own, overrides = dict(OWN_KEYS), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"argument {arg!r} is not key=value, e.g. preset=cpu steps=5")
        if key in own:
            own[key] = value
        else:
            overrides.append(arg)
    if own["channels_last"] not in ("auto", "true", "false"):
        raise ValueError(f"channels_last={own['channels_last']} is invalid; valid values: auto, "
                         "true, false")
    if own["dtype"] not in ("fp32", "bf16"):
        raise ValueError(f"dtype={own['dtype']} is invalid; valid values: fp32, bf16")
    for key in ("steps", "repeats", "warmup", "pairs"):
        if not own[key].isdigit() or (key != "warmup" and int(own[key]) < 1):
            raise ValueError(f"{key}={own[key]} is invalid: must be a positive integer")
    return own, overrides


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


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
    """Training and inference step closures of one model on one fixed batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast,
                 channels_last: bool, compile_: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(x.device, memory_format=fmt)
        self.x = x.contiguous(memory_format=fmt)
        self.y, self.autocast = y, autocast
        self.run = torch.compile(self.model) if compile_ else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4,
                                     fused=can_fuse(self.model) or None)  # as training does

    def train_step(self) -> None:
        self.forward_backward()
        self.opt.step()

    def forward_backward(self) -> None:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(self.run(self.x).float(), self.y)
        loss.backward()

    @torch.no_grad()
    def infer_step(self) -> None:
        self.model.eval()
        with self.autocast():
            self.run(self.x)


KINDS = ("dense", "depthwise", "depthwise_backward", "norm", "other", "optimizer")
NORM_OPS = {"native_batch_norm", "native_batch_norm_backward", "_native_batch_norm_legit",
            "_native_batch_norm_legit_no_training", "native_layer_norm",
            "native_layer_norm_backward"}


def _conv_groups(name: str, args: tuple) -> tuple[int, int]:
    """(groups, input channels) of a convolution or its backward."""
    if name == "convolution":
        return int(args[8]), args[0].shape[1]
    return int(args[9]), args[1].shape[1]  # convolution_backward(grad_out, input, weight, ...)


def _macs(name: str, args: tuple, out) -> int:
    """Multiply-accumulates of a matmul or convolution call (0 for anything else)."""
    if name in ("mm", "addmm", "bmm"):
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        return a.numel() * b.shape[-1]
    if name == "convolution":
        w = args[1]
        return out.numel() * w[0].numel()
    if name == "convolution_backward":
        grad_out, w, mask = args[0], args[2], args[10]
        return grad_out.numel() * w[0].numel() * (int(mask[0]) + int(mask[1]))
    return 0


def _bytes(args: tuple, out) -> int:
    """Bytes of every tensor read or written: the least traffic the call can cause."""
    total = 0
    for t in (*args, *(out if isinstance(out, (tuple, list)) else (out,))):
        if isinstance(t, (tuple, list)):
            total += sum(x.numel() * x.element_size() for x in t if isinstance(x, torch.Tensor))
        elif isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


class Breakdown(TorchDispatchMode):
    """Seconds, FLOPs and least bytes of every ATen call, by kind: dense (matmuls and dense
    convolutions), depthwise convolutions (forward; backward), norms, other (activations,
    residual adds, copies, pooling, loss) and the optimizer's update. Each call is timed alone
    (synchronised on GPUs), so the kinds' shares are a diagnosis, not a measure of the whole
    step's speed."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.in_optimizer = device, False
        self.totals = {k: {"seconds": 0.0, "flops": 0, "bytes": 0} for k in KINDS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        sync(self.device)
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        sync(self.device)
        seconds = time.perf_counter() - t0
        if self.in_optimizer:
            kind = "optimizer"
        elif name in ("convolution", "convolution_backward"):
            groups, channels = _conv_groups(name, args)
            depthwise = groups > 1 and groups == channels
            kind = ("dense" if not depthwise else
                    "depthwise" if name == "convolution" else "depthwise_backward")
        elif name in ("mm", "addmm", "bmm"):
            kind = "dense"
        elif name in NORM_OPS:
            kind = "norm"
        else:
            kind = "other"
        row = self.totals[kind]
        row["seconds"] += seconds
        row["flops"] += 2 * _macs(name, args, out)
        row["bytes"] += _bytes(args, out)
        return out


def breakdown(bench: Bench, device: torch.device, steps: int) -> dict:
    """Where ``steps`` training steps spend their time, by kind of operation."""
    mode = Breakdown(device)
    with mode:
        for _ in range(steps):
            mode.in_optimizer = False
            bench.forward_backward()
            mode.in_optimizer = True
            bench.opt.step()
    total = sum(v["seconds"] for v in mode.totals.values())
    return {k: {**v, "share": v["seconds"] / total} for k, v in mode.totals.items()}


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


def ratio_interval(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """Geometric mean of the paired ratios theirs/ours (seconds, so > 1: ours is faster) and
    its 95% t-interval."""
    from scipy import stats

    logs = [math.log(b / a) for a, b in zip(ours, theirs, strict=True)]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), math.nan, math.nan
    half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def torchvision_name(cfg) -> str:
    if cfg.stem == "resnet":
        return f"resnet{2 + 3 * sum(cfg.depths)}"
    return "convnext_" + {96: "tiny", 128: "base"}.get(cfg.width, f"w{cfg.width}")


def run(own: dict[str, str], overrides: list[str]) -> dict:
    device = torch.device("cuda" if own["device"] == "auto" and torch.cuda.is_available()
                          else ("cpu" if own["device"] == "auto" else own["device"]))
    dtype = torch.bfloat16 if own["dtype"] == "bf16" else None
    autocast = ((lambda: torch.autocast(device.type, dtype=dtype)) if dtype
                else (lambda: torch.autocast(device.type, enabled=False)))
    steps, repeats, warmup = int(own["steps"]), int(own["repeats"]), int(own["warmup"])
    channels_last = resolve_channels_last(
        {"true": True, "false": False}.get(own["channels_last"], "auto"), device)
    compile_ = own["compile"] == "true"
    ladder = own["ladder"]
    names = step_names(ladder)
    chosen = own["only"].split(",") if own["only"] else names
    extra = list(overrides)
    if own["image_size"]:
        extra.append(f"data.image_size={own['image_size']}")
    if own["batch_size"]:
        extra.append(f"batch_size={own['batch_size']}")

    def cfg_of(step: str):
        cfg = compose([f"ladder={ladder}", f"step={step}", f"preset={own['preset']}",
                       "logger=none", *extra])
        return cfg, scale_config(model_config(cfg), cfg.scale.width, cfg.scale.depth)

    cfg0, _ = cfg_of(names[0])
    size, batch = cfg0.data.image_size, cfg0.batch_size
    x = torch.randn(batch, cfg0.model.in_chans, size, size, device=device)
    y = torch.randint(0, cfg0.model.num_classes, (batch,), device=device)
    peak = peak_flops(device, dtype or torch.float32, repeats)
    bandwidth = memory_bandwidth(device, repeats)

    rows = []
    for step in chosen:
        _, mcfg = cfg_of(step)
        model = build_model(mcfg)
        macs = count_gflops(model, size, mcfg.in_chans, convention="macs") * 1e9
        bench = Bench(model, x, y, autocast, channels_last, compile_)
        t = measure([bench], steps, repeats, warmup, device)[0]
        train_ips = batch / statistics.median(t["train"])
        rows.append({
            "step": step, "params": count_params(model), "gmacs": macs / 1e9,
            "train_images_per_s": train_ips,
            "infer_images_per_s": batch / statistics.median(t["infer"]),
            "train_flops_per_s": 3 * 2 * macs * train_ips,
            "peak_fraction": 3 * 2 * macs * train_ips / peak,
        })
        if own["breakdown"] == "true":
            rows[-1]["breakdown"] = breakdown(bench, device, steps)
        print(f"{step:22s} train {train_ips:8.1f} img/s  infer "
              f"{rows[-1]['infer_images_per_s']:8.1f} img/s  "
              f"{100 * rows[-1]['peak_fraction']:.1f}% of peak", file=sys.stderr)
        del bench, model

    # ours against torchvision, full size, same classes/channels/resolution, interleaved
    versus = []
    full = {"model.num_classes": cfg0.model.num_classes, "model.in_chans": cfg0.model.in_chans}
    for step in (names[0], names[-1]):
        cfg = compose([f"ladder={ladder}", f"step={step}", *[f"{k}={v}" for k, v in full.items()],
                       "model.drop_path_rate=0"])
        ours = build_model(model_config(cfg))
        theirs = to_torchvision(ours)
        pair = [Bench(ours, x, y, autocast, channels_last, compile_),
                Bench(theirs, x, y, autocast, channels_last, compile_)]
        t_ours, t_tv = measure(pair, steps, int(own["pairs"]), warmup, device)
        record = {"step": step, "torchvision": torchvision_name(ours.cfg),
                  "params": count_params(ours)}
        for kind in ("train", "infer"):
            record[f"{kind}_ours"] = batch / statistics.median(t_ours[kind])
            record[f"{kind}_torchvision"] = batch / statistics.median(t_tv[kind])
            (record[f"{kind}_ratio"], record[f"{kind}_ratio_low"],
             record[f"{kind}_ratio_high"]) = ratio_interval(t_ours[kind], t_tv[kind])
        versus.append(record)
        print(f"{step:22s} ours/torchvision: train {record['train_ratio']:.3f} "
              f"[{record['train_ratio_low']:.3f}, {record['train_ratio_high']:.3f}], infer "
              f"{record['infer_ratio']:.3f} [{record['infer_ratio_low']:.3f}, "
              f"{record['infer_ratio_high']:.3f}]", file=sys.stderr)
        del pair, ours, theirs

    data_rows = []
    if own["data"] == "true":
        for preset in ("cpu", "cifar10"):
            data_rows += data_share(preset, ladder, device, steps, repeats, warmup, extra)
    return {"name": own["name"] or f"{own['preset']}-{size}px", "machine": machine(),
            "command": "python -m roadmap.bench " + " ".join(
                [f"{k}={v}" for k, v in own.items() if v != OWN_KEYS[k]] + overrides),
            "device": str(device), "dtype": own["dtype"], "channels_last": channels_last,
            "compile": compile_, "preset": own["preset"], "image_size": size, "batch": batch,
            "steps": steps, "repeats": repeats, "pairs": int(own["pairs"]),
            "peak_flops_per_s": peak, "bandwidth_bytes_per_s": bandwidth, "steps_table": rows,
            "versus_torchvision": versus, "data_path": data_rows}


def data_share(preset: str, ladder: str, device: torch.device, steps: int, repeats: int,
               warmup: int, extra: list[str]) -> list[dict]:
    """Share of a training step spent getting and augmenting the batch, at both ends."""
    from roadmap.data import DataError, load_dataset, make_synthetic
    from roadmap.loaders import MemoryTrainLoader

    rows = []
    for step in (step_names(ladder)[0], step_names(ladder)[-1]):
        cfg = compose([f"ladder={ladder}", f"step={step}", f"preset={preset}", "logger=none"])
        source = cfg.data.name
        try:
            dataset = load_dataset(cfg.data)
        except DataError:  # e.g. CIFAR offline: its size and pipeline on generated images
            from omegaconf import OmegaConf

            fake = OmegaConf.create({**OmegaConf.to_container(cfg.data),
                                     "train_size": 10 * cfg.batch_size,
                                     "test_size": cfg.batch_size, "noise": 0.3})
            dataset = make_synthetic(fake)
            source = f"generated images of {cfg.data.name}'s size (its files are not here)"
        mcfg = scale_config(model_config(cfg), cfg.scale.width, cfg.scale.depth)
        augment = BatchAugment(cfg.data, cfg.recipe, mcfg.num_classes)
        loader = MemoryTrainLoader(dataset, cfg.batch_size, augment, device)
        fmt = (torch.channels_last if resolve_channels_last(cfg.channels_last, device)
               else torch.contiguous_format)  # as training lays them out
        model = build_model(mcfg).to(device, memory_format=fmt)
        opt = torch.optim.AdamW(model.parameters(), fused=can_fuse(model) or None)
        data_t, step_t = timed_data_steps(loader, model, opt, cfg.recipe.label_smoothing,
                                          device, warmup, steps * repeats, fmt)
        share = sum(data_t) / sum(step_t)
        rows.append({"preset": preset, "step": step, "source": source,
                     "batch": cfg.batch_size, "data_share": share,
                     "data_images_per_s": cfg.batch_size / statistics.median(data_t),
                     "step_images_per_s": cfg.batch_size / statistics.median(step_t)})
        print(f"data {preset:8s} {step:22s} {100 * share:.1f}% of a step, data path "
              f"{rows[-1]['data_images_per_s']:.0f} img/s", file=sys.stderr)
    return rows


def timed_data_steps(loader, model: nn.Module, opt, label_smoothing: float,
                     device: torch.device, warmup: int, n: int,
                     fmt: torch.memory_format = torch.contiguous_format) -> tuple[list, list]:
    """Seconds of each step spent getting the batch, and of each whole training step."""
    batches, epoch = loader.epoch(0), 0
    data_t, step_t = [], []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            epoch += 1
            batches = loader.epoch(epoch)
            x, y = next(batches)
        x = x.contiguous(memory_format=fmt)
        sync(device)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y, label_smoothing=label_smoothing).backward()
        opt.step()
        sync(device)
        if i >= warmup:
            data_t.append(t1 - t0)
            step_t.append(time.perf_counter() - t0)
    return data_t, step_t


def md_table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table, text columns left-aligned and the rest right-aligned."""
    left = {"step", "torchvision", "preset", "data"}
    align = ["---" if h in left else "---:" for h in header]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _rate(b: dict, key: str) -> float:
    return b[key] / b["seconds"] if b["seconds"] > 0 else 0.0


def bound_of(flops_per_s: float, bytes_per_s: float, peak: float, bandwidth: float) -> str:
    """Which limit a kind of operation is near: memory (>= 40% of the copy bandwidth), compute
    (>= 50% of the matmul peak), or neither."""
    fl, bw = flops_per_s / peak, bytes_per_s / bandwidth
    if bw >= 0.4:
        return f"memory ({100 * bw:.0f}% of bandwidth)"
    if fl >= 0.5:
        return f"compute ({100 * fl:.0f}% of peak)"
    return f"neither ({100 * fl:.0f}% of peak, {100 * bw:.0f}% of bandwidth)"


def bound_notes(r: dict) -> list[str]:
    """Where each step's training time goes, and what bounds its depthwise convolutions."""
    peak, bandwidth = r["peak_flops_per_s"], r.get("bandwidth_bytes_per_s") or math.inf
    rows, bounds, bwd_ratios = [], {}, []
    for st in r["steps_table"]:
        b = st.get("breakdown")
        if not b:
            continue
        dw = {k: b["depthwise"][k] + b["depthwise_backward"][k] for k in ("seconds", "flops",
                                                                           "bytes")}
        bound = "-"
        if dw["seconds"] > 0:
            bound = bound_of(_rate(dw, "flops"), _rate(dw, "bytes"), peak, bandwidth)
            bounds.setdefault(bound.split(" ")[0], []).append(st["step"])
            bwd_ratios.append(b["depthwise_backward"]["seconds"]
                              / max(b["depthwise"]["seconds"], 1e-12))
        rows.append([st["step"], *(f"{100 * b[k]['share']:.0f}%" for k in KINDS),
                     f"{_rate(b['dense'], 'flops') / 1e9:.1f}",
                     f"{_rate(dw, 'flops') / 1e9:.1f}" if dw["seconds"] else "-",
                     f"{_rate(dw, 'bytes') / 1e9:.2f}" if dw["seconds"] else "-", bound])
    lines = ["Where a training step's time goes (each ATen call timed alone during one more "
             "step; dense = matmuls and dense convolutions; GB/s counts only the bytes each "
             "call must read and write, a lower bound on its traffic; the depthwise bound is "
             "memory at >= 40% of the copy bandwidth, compute at >= 50% of the matmul peak):",
             ""]
    lines += md_table(["step", "dense", "depthwise", "depthwise bwd", "norm", "other",
                       "optimizer", "dense GFLOP/s", "depthwise GFLOP/s", "depthwise GB/s",
                       "depthwise bound"], rows)
    if bounds:
        text = ["", "What bounds the depthwise steps:"]
        if bounds.get("neither"):
            text.append(f"in {', '.join(bounds['neither'])} the depthwise convolutions are "
                        "near neither limit. A depthwise conv does only k x k multiply-adds "
                        "per value it loads, too few to use the matrix units that set the "
                        "peak, and these kernels do not stream memory at the copy rate either: "
                        "the time is the convolution kernels' own, most of it in the backward "
                        f"(which takes {min(bwd_ratios):.1f}-{max(bwd_ratios):.1f}x the "
                        "forward's time across the steps).")
        if bounds.get("memory"):
            text.append(f"In {', '.join(bounds['memory'])} they move data at 40% or more of "
                        "the copy bandwidth: memory-bound.")
        if bounds.get("compute"):
            text.append(f"In {', '.join(bounds['compute'])} they are near the matmul peak.")
        lines.append(" ".join(text))
    return lines


def _ratio_text(v: dict, kind: str) -> str:
    low, high = v.get(f"{kind}_ratio_low", math.nan), v.get(f"{kind}_ratio_high", math.nan)
    interval = "" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]"
    return f"{v[f'{kind}_ratio']:.3f}{interval}"


def render(results: list[dict]) -> str:
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`python -m roadmap.bench`) from the JSON files in "
             "`benchmarks/`; every figure below is one of those runs. Images/s are medians of "
             "repeated timings after warm-up. Ours / torchvision: the two models are timed "
             "step by step, alternating, for `pairs` rounds; the ratio is the geometric mean of "
             "the rounds' ratios with its 95% interval (> 1: ours is faster; an interval across "
             "1 means this machine cannot tell the two apart).", ""]
    for r in results:
        m = r["machine"]
        lines += [f"## {r['name']}", "",
                  f"`{r['command']}` on {r['device']} ({m['cpu']}, {m['threads']} threads"
                  + (f", {m['gpu']}" if m.get("gpu") else "") + f"), torch {m['torch']}, "
                  f"torchvision {m['torchvision']}; {r['dtype']}, channels_last="
                  f"{str(r['channels_last']).lower()}, compile={str(r['compile']).lower()}; "
                  f"{r['image_size']}x{r['image_size']}, batch {r['batch']}. Peak of a 2048^2 "
                  f"matmul: {r['peak_flops_per_s'] / 1e9:.1f} GFLOP/s"
                  + (f"; copy bandwidth: {r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s"
                     if r.get("bandwidth_bytes_per_s") else "") + ".", ""]
        lines += md_table(
            ["step", "params", "GMACs/img", "train img/s", "infer img/s", "train GFLOP/s",
             "of peak"],
            [[s["step"], f"{s['params']:,}", f"{s['gmacs']:.4f}",
              f"{s['train_images_per_s']:.1f}", f"{s['infer_images_per_s']:.1f}",
              f"{s['train_flops_per_s'] / 1e9:.1f}", f"{100 * s['peak_fraction']:.1f}%"]
             for s in r["steps_table"]])
        lines += ["", "Ours against torchvision (full-size models, same input):", ""]
        lines += md_table(
            ["step", "torchvision", "train ours", "train tv", "ratio [95%]", "infer ours",
             "infer tv", "ratio [95%]"],
            [[v["step"], v["torchvision"], f"{v['train_ours']:.1f}",
              f"{v['train_torchvision']:.1f}", _ratio_text(v, "train"),
              f"{v['infer_ours']:.1f}", f"{v['infer_torchvision']:.1f}",
              _ratio_text(v, "infer")] for v in r["versus_torchvision"]])
        if any("breakdown" in st for st in r["steps_table"]):
            lines += ["", *bound_notes(r)]
        if r["data_path"]:
            lines += ["", "Data path (get the batch + augment it, on the training device):", ""]
            lines += md_table(
                ["preset", "step", "data", "batch", "share of a step", "data img/s",
                 "step img/s"],
                [[d["preset"], d["step"], d["source"], d["batch"],
                  f"{100 * d['data_share']:.1f}%", f"{d['data_images_per_s']:.0f}",
                  f"{d['step_images_per_s']:.0f}"] for d in r["data_path"]])
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        own, overrides = parse(sys.argv[1:] if argv is None else argv)
        result = run(own, overrides)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(own["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['name']}.json").write_text(json.dumps(result, indent=1) + "\n")
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    target = out.parent / "BENCHMARKS.md" if out.name == "benchmarks" else out / "BENCHMARKS.md"
    target.write_text(render(results))
    print(f"wrote {out / (result['name'] + '.json')} and {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
