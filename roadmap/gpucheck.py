"""``make gpu-check``: every GPU figure the project lacks, in one command, on a machine with one
CUDA GPU and no package registry (at most about 8 minutes on one GPU).

    python -m roadmap.gpucheck [--data-root DIR] [--out benchmarks] [--tiny] [--device cuda]

1. the torch, CUDA and GPU names;
2. the smoke ladder end to end on the device (every step trains; its table collected);
3. the ``cpu`` preset's two ends (``resnet50``, ``separate_downsampling``) on the device with
   bf16 and channels-last, ``compile`` off and on: top-1, images/s, wall time;
4. full-size ResNet-50 and ConvNeXt-T training and inference images/s against torchvision's at
   32x32 and 224x224 (bf16, channels-last), with peak memory, and the whole-recipe in-memory
   data path's share of a full-size step at 32 (``roadmap.bench``: ``gpu-32px``,
   ``gpu-224px``).

Writes ``<out>/gpu-check.json`` (1-3) beside the benchmarks' ``gpu-*.json`` (4) and rebuilds
``BENCHMARKS.md``, whose GPU sections come from them. ``--tiny`` runs the same steps at a size
the CPU does in about a minute (two steps of the ladder, one epoch, tiny benchmarks, compile
off): the test suite runs it so that the command never rots. Fashion-MNIST (for 3) is found as
for any run, or in ``--data-root`` (a folder with the four idx files, carried to the machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ENDS = ("resnet50", "separate_downsampling")


def environment(device: str) -> dict:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
           "python": sys.version.split()[0]}
    if device == "cuda" and torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def run(command: list[str], what: str) -> float:
    """Run ``command`` (a roadmap module) in a new process; its wall time; a failure raises."""
    print(f"roadmap.gpucheck: {what}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    start = time.time()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{tail}")
    seconds = time.time() - start
    print(f"roadmap.gpucheck: {what}: {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def smoke_ladder(out: Path, device: str, tiny: bool) -> dict:
    """The smoke ladder end to end on ``device``: each step's status and top-1."""
    extra = ["logger=none", f"device={device}"]
    steps = ["--steps", ",".join(ENDS)] if tiny else []
    if tiny:
        extra += ["epochs=1", "data.train_size=200", "data.test_size=100"]
    wall = run([sys.executable, "-m", "roadmap.sweep", str(out), "--preset", "smoke", *steps,
                "--", *extra], "the smoke ladder")
    import pandas as pd

    table = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    rows = [{"step": r["step"], "status": r["status"], "top1": r["top1_mean"],
             "train_images_per_s": r["train_images_per_s"]} for r in table.to_dict("records")]
    return {"wall_s": wall, "steps": rows}


def preset_ends(out: Path, device: str, tiny: bool, data_root: str | None) -> list[dict]:
    """The ``cpu`` preset's two ends with bf16 and channels-last, compile off and on."""
    compiles = "false" if tiny else "false,true"
    preset = ["preset=smoke", "epochs=1", "data.train_size=200", "data.test_size=100"] if tiny \
        else ["preset=cpu"] + ([f"data.root={data_root}", "data.download=false"]
                               if data_root else [])
    precision = "fp32" if device == "cpu" else "bf16"
    run([sys.executable, "-m", "roadmap.train", "--multirun", f"step={','.join(ENDS)}",
         f"compile={compiles}", *preset, "logger=none", f"device={device}",
         f"precision={precision}", "channels_last=true", f"hydra.sweep.dir={out}"],
        "the cpu preset's two ends")
    from roadmap.rundir import find_run_dirs

    rows = []
    for found in find_run_dirs(out):
        record, named = found.read_record(), found.identity()
        m = record.metrics if record is not None else {}
        rows.append({"step": named["step"], "compile": "compile=true" in named["variant"],
                     "precision": precision,
                     "status": record.status if record is not None else "not run",
                     "top1": m.get("top1"), "val_top1": m.get("val_top1"),
                     "train_images_per_s": m.get("train_images_per_s"),
                     "wall_s": m.get("wall_s")})
    return rows


def benches(out: Path, device: str, tiny: bool) -> None:
    """Full-size ResNet-50 and ConvNeXt-T against torchvision at 32 and 224 (bf16,
    channels-last, peak memory), and the whole-recipe data path's share at 32."""
    dtype = "fp32" if device == "cpu" else "bf16"
    common = [f"device={device}", f"dtype={dtype}", "channels_last=true", f"out={out}",
              f"only={','.join(ENDS)}", "breakdown=false"]
    small = ["steps=1", "repeats=1", "warmup=0", "pairs=2", "batch_size=2"] if tiny else [
        "steps=5", "repeats=5", "warmup=2", "pairs=10"]
    sizes = (("gpu-32px", "cifar10", "true", 32), ("gpu-224px", "imagenet", "false",
                                                     64 if tiny else 224))
    for name, preset, data, size in sizes:
        batch = [] if tiny else [f"batch_size={128 if size == 32 else 64}"]
        run([sys.executable, "-m", "roadmap.bench", f"name={name}", f"preset={preset}",
             f"image_size={size}", f"data={data}", *common, *small, *batch],
            f"the benchmarks at {size}px")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device is visible; make gpu-check runs on a machine with one "
              "(--device cpu --tiny checks the command here)", file=sys.stderr)
        return 2
    out, start = Path(args.out), time.time()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="gpucheck-") as work:
            work = Path(work)
            record = {"name": "gpu-check", "kind": "gpu-check", "tiny": args.tiny,
                      "environment": environment(args.device),
                      "smoke_ladder": smoke_ladder(work / "smoke", args.device, args.tiny),
                      "preset_ends": preset_ends(work / "ends", args.device, args.tiny,
                                                 args.data_root)}
            benches(out, args.device, args.tiny)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from roadmap.bench import write_report
    from roadmap.runtime import code_version

    record.update(wall_s=time.time() - start, commit=code_version())
    (out / "gpu-check.json").write_text(json.dumps(record, indent=1) + "\n")
    target = write_report(out)
    print(f"roadmap.gpucheck: done in {record['wall_s'] / 60:.1f} min; wrote "
          f"{out / 'gpu-check.json'} and {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
