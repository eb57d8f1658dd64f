"""The committed snapshots: drift guards for what a change must never move silently.

- ``snapshots/complexity.json``: every step's parameters and GFLOPs (pycls-style);
- ``snapshots/training.json``: the exact metrics of a few short deterministic smoke runs (both
  ends of the ladder and the ``recipe`` step, which runs the whole data pipeline), keyed by the
  machine type that made them: oneDNN picks its kernels, and so its float sums, by CPU.

    python -m tests.snapshot     # or: make snapshot  -- rewrite both after a deliberate change
    python -m tests.snapshot --add-machine   # pin this machine type too (numbers unchanged)

The commit that rewrites ``training.json`` says why the numbers moved and by how much
(``git diff`` of the file shows it).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from roadmap.describe import describe
from roadmap.ladder import LADDERS
from roadmap.runtime import cpu_model

FOLDER = Path(__file__).parent / "snapshots"
COMPLEXITY = FOLDER / "complexity.json"
TRAINING = FOLDER / "training.json"

TRAINING_STEPS = ("resnet50", "recipe", "separate_downsampling")
"""Step 0, the recipe step (RandAugment, Mixup/CutMix, erasing, AdamW, cosine) and the end."""
TRAINING_OVERRIDES = ("preset=smoke", "logger=none", "progress=false")
THREADS = 2
"""The runs use this many threads wherever they run: the sums' order depends on it."""
PINNED = ("top1", "top5", "loss", "val_top1", "val_top5", "val_loss", "train_loss", "params",
          "gflops", "lr", "n_train")


def measure_complexity(ladder: str) -> dict[str, dict]:
    return {r["step"]: {"params": r["params"], "gflops": r["gflops"]} for r in describe(ladder)}


def machine() -> str:
    """The machine type a training snapshot holds for: CPU model, the vector ISA torch uses,
    torch's version."""
    return (f"{cpu_model()} | {torch.backends.cpu.get_cpu_capability()} | "
            f"torch {torch.__version__}")


def training_run(step: str, folder: Path) -> dict:
    """One snapshot run of ``step`` in ``folder``: the metrics it pins, and its epochs' losses."""
    from roadmap.conf import compose
    from roadmap.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        metrics = train(compose([f"step={step}", *TRAINING_OVERRIDES]), folder)
    finally:
        torch.set_num_threads(threads)
    epochs = [json.loads(line) for line in (folder / "epochs.jsonl").read_text().splitlines()]
    return {**{k: metrics[k] for k in PINNED},
            "epoch_train_loss": [e["train_loss"] for e in epochs]}


def measure_training(root: Path) -> dict[str, dict]:
    return {step: training_run(step, root / step) for step in TRAINING_STEPS}


def main(argv: list[str] | None = None) -> None:
    """Rewrite both snapshots; ``training.json`` then holds this machine type only (the others'
    numbers would be stale after a deliberate change), unless ``--add-machine``."""
    add = "--add-machine" in (sys.argv[1:] if argv is None else argv)
    COMPLEXITY.write_text(json.dumps({ladder: measure_complexity(ladder) for ladder in LADDERS},
                                     indent=1) + "\n")
    print(f"wrote {COMPLEXITY}")
    stored = json.loads(TRAINING.read_text()) if add and TRAINING.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        stored[machine()] = measure_training(Path(tmp))
    TRAINING.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    print(f"wrote {TRAINING} for {machine()}")


if __name__ == "__main__":
    main()
