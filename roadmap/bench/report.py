"""``BENCHMARKS.md`` from the benchmark runs' JSON files: the tables and the generated text on
what bounds the depthwise steps."""

from __future__ import annotations

import math

from roadmap.bench.breakdown import KINDS


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
        ratio = (b["depthwise_backward"]["seconds"] / b["depthwise"]["seconds"]
                 if b["depthwise"]["seconds"] else None)
        rows.append([st["step"], *(f"{100 * b[k]['share']:.0f}%" for k in KINDS),
                     f"{ratio:.1f}x" if ratio is not None else "-",
                     f"{_rate(b['dense'], 'flops') / 1e9:.1f}",
                     f"{_rate(dw, 'flops') / 1e9:.1f}" if dw["seconds"] else "-",
                     f"{_rate(dw, 'bytes') / 1e9:.2f}" if dw["seconds"] else "-", bound])
    lines = ["Where a training step's time goes (each ATen call timed alone during one more "
             "step; dense = matmuls and dense convolutions; GB/s counts only the bytes each "
             "call must read and write, a lower bound on its traffic; the depthwise bound is "
             "memory at >= 40% of the copy bandwidth, compute at >= 50% of the matmul peak):",
             ""]
    lines += md_table(["step", "dense", "depthwise", "depthwise bwd", "norm", "other",
                       "optimizer", "dw bwd / fwd", "dense GFLOP/s", "depthwise GFLOP/s",
                       "depthwise GB/s", "depthwise bound"], rows)
    if bounds:
        text = ["", "What bounds the depthwise steps:"]
        if bounds.get("neither"):
            text.append(f"in {', '.join(bounds['neither'])} the depthwise convolutions are "
                        "near neither limit. A depthwise conv does only k x k multiply-adds "
                        "per value it loads, too few to use the matrix units that set the "
                        "peak, and these kernels do not stream memory at the copy rate either: "
                        "the time is the convolution kernels' own (the backward takes "
                        f"{min(bwd_ratios):.1f}-{max(bwd_ratios):.1f}x the forward's time "
                        "across the steps).")
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


def _header(r: dict) -> list[str]:
    m = r["machine"]
    made = f" Made by commit {r['commit']}." if r.get("commit") else (
        " Made before benchmark runs recorded their commit.")
    return [f"## {r['name']}", "",
            f"`{r['command']}` on {r['device']} ({m['cpu']}, {m['threads']} threads"
            + (f", {m['gpu']}" if m.get("gpu") else "") + f"), torch {m['torch']}, "
            f"torchvision {m['torchvision']}; {r['dtype']}, channels_last="
            f"{str(r['channels_last']).lower()}, compile={str(r['compile']).lower()}; "
            f"{r['image_size']}x{r['image_size']}, batch {r['batch']}. Peak of a 2048^2 "
            f"matmul: {r['peak_flops_per_s'] / 1e9:.1f} GFLOP/s"
            + (f"; copy bandwidth: {r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s"
               if r.get("bandwidth_bytes_per_s") else "") + "." + made, ""]


def _model_tables(r: dict) -> list[str]:
    lines = md_table(
        ["step", "params", "GMACs/img", "train img/s", "infer img/s", "train GFLOP/s",
         "of peak"],
        [[s["step"], f"{s['params']:,}", f"{s['gmacs']:.4f}",
          f"{s['train_images_per_s']:.1f}", f"{s['infer_images_per_s']:.1f}",
          f"{s['train_flops_per_s'] / 1e9:.1f}", f"{100 * s['peak_fraction']:.1f}%"]
         for s in r["steps_table"]])
    lines += ["", "Ours against torchvision (full-size models, same input):", ""]
    peak = any("train_peak_mb_ours" in v for v in r["versus_torchvision"])
    lines += md_table(
        ["step", "torchvision", "train ours", "train tv", "ratio [95%]", "infer ours",
         "infer tv", "ratio [95%]", *(["peak MB ours", "peak MB tv"] if peak else [])],
        [[v["step"], v["torchvision"], f"{v['train_ours']:.1f}",
          f"{v['train_torchvision']:.1f}", _ratio_text(v, "train"),
          f"{v['infer_ours']:.1f}", f"{v['infer_torchvision']:.1f}",
          _ratio_text(v, "infer"), *([_peak(v, "ours"), _peak(v, "torchvision")] if peak
                                     else [])] for v in r["versus_torchvision"]])
    if any("breakdown_ours" in v for v in r["versus_torchvision"]):
        lines += ["", *_versus_breakdown(r["versus_torchvision"])]
    if r.get("pointwise"):
        lines += ["", *_pointwise_table(r["pointwise"])]
    if any("breakdown" in st for st in r["steps_table"]):
        lines += ["", *bound_notes(r)]
    return lines


def _versus_breakdown(versus: list[dict]) -> list[str]:
    """Where ours' and torchvision's full-size training steps go, and the ceiling of the ratio:
    with every operation of ours but its dense matmuls and convolutions free, the ratio would be
    the measured one over ours' dense share."""
    kinds = ("dense", "depthwise", "depthwise_backward", "norm", "other", "optimizer")
    rows = [[v["step"], who, *(f"{100 * v[f'breakdown_{key}'][k]['share']:.0f}%" for k in kinds),
             f"{v['train_ratio_ceiling']:.2f}" if who == "ours" else ""]
            for v in versus if "breakdown_ours" in v
            for who, key in (("ours", "ours"), (v["torchvision"], "torchvision"))]
    return ["The full-size training steps of that comparison by kind of operation (one more "
            "step each, each call timed alone; ceiling: the ratio over ours' dense share, what "
            "ours / torchvision would be if everything of ours but its dense matmuls and "
            "convolutions took no time):", "",
            *md_table(["step", "model", "dense", "depthwise", "depthwise bwd", "norm", "other",
                       "optimizer", "ceiling"], rows)]


def _pointwise_table(rows: list[dict]) -> list[str]:
    """The two ways of every 1x1 conv of the compared networks (roadmap.bench.pointwise)."""
    return ["Every 1x1 conv of those full-size networks, forward + backward on channels-last "
            "input, as a matrix product and as the backend's convolution (ms, medians; ratio: "
            "matmul / conv, > 1: the conv is faster; runs as: what `Pointwise` does here, "
            "roadmap/models/net.py):", "",
            *md_table(["model", "in", "out", "map", "bias", "matmul ms", "conv ms",
                       "ratio [95%]", "runs as"],
                      [[p["model"], p["cin"], p["cout"], p["map"], "yes" if p["bias"] else "no",
                        f"{p['ms_matmul']:.2f}", f"{p['ms_conv']:.2f}",
                        f"{p['ratio']:.2f} [{p['ratio_low']:.2f}, {p['ratio_high']:.2f}]",
                        p["runs_as"]] for p in rows])]


def _share_table(rows: list[dict]) -> list[str]:
    """Share of a training step spent on the data path; ``augmented per call``: the batches
    the loader augments at once (older runs: one)."""
    return md_table(
        ["preset", "step", "data", "batch", "augmented per call", "share of a step",
         "data img/s", "step img/s"],
        [[d["preset"], d["step"], d["source"], d["batch"],
          f"{d.get('augment_batches', 1)} batches", f"{100 * d['data_share']:.1f}%",
          f"{d['data_images_per_s']:.0f}", f"{d['step_images_per_s']:.0f}"] for d in rows])


def _augment_tables(a: dict) -> list[str]:
    lines = ["In-memory data path with the whole convnext recipe (RandAugment "
             "rand-m9-mstd0.5-inc1, Mixup 0.8 / CutMix 1.0, random erasing 0.25, crop, flip) on "
             f"{a['source']}: batched on the device against per-image (timm's PIL RandAugment "
             "and RandomErasing image by image), the same batches, timed in alternating rounds "
             "in the same run (medians; the ratio is the rounds' geometric mean):", ""]
    lines += md_table(["batch", "batched img/s", "per-image img/s", "batched / per-image [95%]"],
                      [[v["batch"], f"{v['batched_images_per_s']:.0f}",
                        f"{v['per_image_images_per_s']:.0f}",
                        f"{v['speedup']:.1f}x [{v.get('speedup_low', math.nan):.1f}, "
                        f"{v.get('speedup_high', math.nan):.1f}]"] for v in a["versions"]])
    lines += ["", "Its share of a cpu-preset training step with that recipe:", ""]
    lines += _share_table(a["share"])
    if a.get("folders"):
        f = a["folders"][0]
        lines += ["", "Image folders: timm's training transforms of the convnext recipe at "
                  f"{f['image_size']}px (decode, random-resized crop, RandAugment, erasing) on "
                  f"{f['source']}, in the loader's worker processes:", ""]
        lines += md_table(["workers", "img/s", "img/s per worker"],
                          [[r["workers"], f"{r['images_per_s']:.0f}",
                            f"{r['per_worker_images_per_s']:.0f}"] for r in a["folders"]])
    return lines


def _peak(v: dict, who: str) -> str:
    mb = v.get(f"train_peak_mb_{who}")
    return f"{mb:,.0f}" if mb is not None else "-"


def gpu_check_section(r: dict) -> list[str]:
    """``make gpu-check``'s own figures: the machine, the smoke ladder on the device, the cpu
    preset's two ends with bf16 (compile off and on)."""
    env = r["environment"]
    lines = [f"## {r['name']}", "",
             f"`make gpu-check` (`python -m roadmap.gpucheck{' --tiny' if r['tiny'] else ''}`) "
             f"on {env['device']} ({', '.join(env.get('gpus', [])) or 'no GPU'}), torch "
             f"{env['torch']}, CUDA {env.get('cuda')}, Python {env['python']}; "
             f"{r['wall_s'] / 60:.1f} min in all. Made by commit {r.get('commit')}. The "
             "benchmarks it ran are the `gpu-32px` and `gpu-224px` sections.", "",
             f"The smoke ladder on the device ({r['smoke_ladder']['wall_s']:.0f} s):", ""]
    lines += md_table(["step", "status", "top-1 %", "train img/s"],
                      [[s["step"], s["status"], _fmt_num(s["top1"], "{:.2f}"),
                        _fmt_num(s["train_images_per_s"], "{:.0f}")]
                       for s in r["smoke_ladder"]["steps"]])
    lines += ["", "The preset's two ends on the device (channels-last):", ""]
    lines += md_table(["step", "precision", "compile", "status", "val top-1 %", "top-1 %",
                       "train img/s", "wall s"],
                      [[e["step"], e["precision"], str(e["compile"]).lower(), e["status"],
                        _fmt_num(e["val_top1"], "{:.2f}"), _fmt_num(e["top1"], "{:.2f}"),
                        _fmt_num(e["train_images_per_s"], "{:.0f}"),
                        _fmt_num(e["wall_s"], "{:.0f}")] for e in r["preset_ends"]])
    return [*lines, ""]


def _fmt_num(value, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) and value == value else "-"


def render(results: list[dict]) -> str:
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`python -m roadmap.bench`) from the JSON files in "
             "`benchmarks/`; every figure below is one of those runs. Images/s are medians of "
             "repeated timings after warm-up. Ours / torchvision: the two models are timed "
             "step by step, alternating, for `pairs` rounds; the ratio is the geometric mean of "
             "the rounds' ratios with its 95% interval (> 1: ours is faster; an interval across "
             "1 means this machine cannot tell the two apart).", ""]
    for r in results:
        if r.get("kind") == "gpu-check":
            lines += gpu_check_section(r)
            continue
        lines += _header(r)
        if r["steps_table"]:
            lines += _model_tables(r)
        if r["data_path"]:
            lines += ["", "Data path (get the batch + augment it, on the training device):", ""]
            lines += _share_table(r["data_path"])
        if r.get("augment"):
            lines += ["", *_augment_tables(r["augment"])]
        lines.append("")
    return "\n".join(lines)
