"""``make bench``: every step's speed, against torchvision and against the machine's peak.

    python -m roadmap.bench [preset=cpu] [name=cpu-32px] [image_size=N] [batch_size=N]
        [steps=5] [repeats=5] [warmup=2] [dtype=fp32|bf16] [channels_last=auto] [compile=false]
        [device=auto] [ladder=resnet50] [only=resnet50,gelu] [data=true] [out=benchmarks]

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

from roadmap.augment import BatchAugment
from roadmap.conf import compose, model_config
from roadmap.flops import count_gflops, count_params
from roadmap.ladder import step_names
from roadmap.models import build_model, scale_config
from roadmap.models.convert import to_torchvision
from roadmap.train import resolve_channels_last

OWN_KEYS = {"preset": "cpu", "name": "", "image_size": "", "batch_size": "", "steps": "5",
            "repeats": "5", "warmup": "2", "dtype": "fp32", "channels_last": "auto",
            "compile": "false", "device": "auto", "ladder": "resnet50", "only": "",
            "data": "true", "out": "benchmarks"}


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
    for key in ("steps", "repeats", "warmup"):
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
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def train_step(self) -> None:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(self.run(self.x).float(), self.y)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def infer_step(self) -> None:
        self.model.eval()
        with self.autocast():
            self.run(self.x)


def measure(benches: list[Bench], steps: int, repeats: int, warmup: int,
            device: torch.device) -> list[dict[str, list[float]]]:
    """Seconds per step of every bench, interleaved repeat by repeat."""
    for b in benches:
        for _ in range(warmup):
            b.train_step()
            b.infer_step()
    times = [{"train": [], "infer": []} for _ in benches]
    for _ in range(repeats):
        for b, t in zip(benches, times, strict=True):
            t["train"].append(timed(b.train_step, steps, device))
            t["infer"].append(timed(b.infer_step, steps, device))
    return times


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
        t_ours, t_tv = measure(pair, steps, repeats, warmup, device)
        record = {"step": step, "torchvision": torchvision_name(ours.cfg),
                  "params": count_params(ours)}
        for kind in ("train", "infer"):
            ratios = [b / a for a, b in zip(t_ours[kind], t_tv[kind], strict=True)]
            record[f"{kind}_ours"] = batch / statistics.median(t_ours[kind])
            record[f"{kind}_torchvision"] = batch / statistics.median(t_tv[kind])
            record[f"{kind}_ratio"] = statistics.median(ratios)
        versus.append(record)
        print(f"{step:22s} ours/torchvision: train {record['train_ratio']:.3f}, "
              f"infer {record['infer_ratio']:.3f}", file=sys.stderr)
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
            "steps": steps, "repeats": repeats, "peak_flops_per_s": peak, "steps_table": rows,
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
        model = build_model(mcfg).to(device)
        opt = torch.optim.AdamW(model.parameters())
        data_t, step_t = timed_data_steps(loader, model, opt, cfg.recipe.label_smoothing,
                                          device, warmup, steps * repeats)
        share = sum(data_t) / sum(step_t)
        rows.append({"preset": preset, "step": step, "source": source,
                     "batch": cfg.batch_size, "data_share": share,
                     "data_images_per_s": cfg.batch_size / statistics.median(data_t),
                     "step_images_per_s": cfg.batch_size / statistics.median(step_t)})
        print(f"data {preset:8s} {step:22s} {100 * share:.1f}% of a step, data path "
              f"{rows[-1]['data_images_per_s']:.0f} img/s", file=sys.stderr)
    return rows


def timed_data_steps(loader, model: nn.Module, opt, label_smoothing: float,
                     device: torch.device, warmup: int, n: int) -> tuple[list, list]:
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


def render(results: list[dict]) -> str:
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`python -m roadmap.bench`) from the JSON files in "
             "`benchmarks/`; every figure below is one of those runs. Images/s are medians of "
             "repeated timings after warm-up; ours / torchvision ratios are medians of "
             "interleaved pairs (> 1: ours is faster).", ""]
    for r in results:
        m = r["machine"]
        lines += [f"## {r['name']}", "",
                  f"`{r['command']}` on {r['device']} ({m['cpu']}, {m['threads']} threads"
                  + (f", {m['gpu']}" if m.get("gpu") else "") + f"), torch {m['torch']}, "
                  f"torchvision {m['torchvision']}; {r['dtype']}, channels_last="
                  f"{str(r['channels_last']).lower()}, compile={str(r['compile']).lower()}; "
                  f"{r['image_size']}x{r['image_size']}, batch {r['batch']}. Peak of a 2048^2 "
                  f"matmul: {r['peak_flops_per_s'] / 1e9:.1f} GFLOP/s.", ""]
        lines += md_table(
            ["step", "params", "GMACs/img", "train img/s", "infer img/s", "train GFLOP/s",
             "of peak"],
            [[s["step"], f"{s['params']:,}", f"{s['gmacs']:.4f}",
              f"{s['train_images_per_s']:.1f}", f"{s['infer_images_per_s']:.1f}",
              f"{s['train_flops_per_s'] / 1e9:.1f}", f"{100 * s['peak_fraction']:.1f}%"]
             for s in r["steps_table"]])
        lines += ["", "Ours against torchvision (full-size models, same input):", ""]
        lines += md_table(
            ["step", "torchvision", "train ours", "train tv", "ratio", "infer ours", "infer tv",
             "ratio"],
            [[v["step"], v["torchvision"], f"{v['train_ours']:.1f}",
              f"{v['train_torchvision']:.1f}", f"{v['train_ratio']:.3f}",
              f"{v['infer_ours']:.1f}", f"{v['infer_torchvision']:.1f}",
              f"{v['infer_ratio']:.3f}"] for v in r["versus_torchvision"]])
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
