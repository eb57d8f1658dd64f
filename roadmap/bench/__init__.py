"""``make bench``: every step's speed, against torchvision and against the machine's peak.

    python -m roadmap.bench [preset=cpu] [name=cpu-32px] [image_size=N] [batch_size=N]
        [steps=5] [repeats=5] [warmup=2] [dtype=fp32|bf16] [channels_last=auto] [compile=false]
        [device=auto] [ladder=resnet50] [only=resnet50,gelu] [data=true] [pairs=10]
        [breakdown=true] [models=true] [augment=false] [pointwise=true] [out=benchmarks]

Measured on the current device after warm-up, as medians of ``repeats`` timings of ``steps``
steps each, for the preset's models (its width/depth scale), resolution and batch:

1. every step: training-step images/s (forward, backward, AdamW) and inference images/s;
2. step 0 and the last step against ``torchvision.models.resnet50`` and ``convnext_tiny`` built
   with the same settings (full size, the preset's classes, channels and resolution; ours at full
   size too), timed in the same process, interleaved, and the ratio ours / torchvision;
3. each step's achieved training FLOP/s (3 x forward FLOPs x images/s) against the peak of a
   large matrix multiply measured in the same run, and (``breakdown=true``) where its time goes;
4. (``data=true``) for the ``cpu`` and ``cifar10`` presets: the share of a training step spent
   getting and augmenting the batch (at the preset's batch, or ``batch_size`` when given), and
   the data path's own images/s;
5. (``augment=true``) the in-memory data path with the whole convnext recipe, batched against
   per-image (timm's PIL ops) at batch 128 and 1024, and its share of a cpu-preset step.

6. (``pointwise=true``) every distinct 1x1 conv of step 0's and the last step's full-size
   networks at the benchmark's resolution and batch, forward + backward, as a matrix product
   against the backend's convolution: what ``Pointwise``'s choice between them rests on
   (``roadmap.bench.pointwise``).

``models=false`` skips 1-3 and 6.

Each run writes ``<out>/<name>.json``; ``BENCHMARKS.md`` is rebuilt from every JSON in ``out``.
Modules: ``timing`` (the measurements), ``breakdown`` (time by kind of operation),
``pointwise`` (the two ways of a 1x1 conv), ``report`` (the markdown).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from roadmap.cli import parse_key_values, positive_int
from roadmap.errors import RunError

OWN_KEYS = {"preset": "cpu", "name": "", "image_size": "", "batch_size": "", "steps": "5",
            "repeats": "5", "warmup": "2", "dtype": "fp32", "channels_last": "auto",
            "compile": "false", "device": "auto", "ladder": "resnet50", "only": "",
            "data": "true", "out": "benchmarks", "pairs": "10", "breakdown": "true",
            "models": "true", "augment": "false", "pointwise": "true"}


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The benchmark's own keys (checked) and the Hydra overrides for the models it builds."""
    own, overrides = parse_key_values(argv, OWN_KEYS, "preset=cpu steps=5")
    if own["channels_last"] not in ("auto", "true", "false"):
        raise ValueError(f"channels_last={own['channels_last']} is invalid; valid values: auto, "
                         "true, false")
    for key in ("models", "augment", "data", "breakdown", "compile", "pointwise"):
        if own[key] not in ("true", "false"):
            raise ValueError(f"{key}={own[key]} is invalid; valid values: true, false")
    if own["dtype"] not in ("fp32", "bf16"):
        raise ValueError(f"dtype={own['dtype']} is invalid; valid values: fp32, bf16")
    for key in ("steps", "repeats", "pairs"):
        positive_int(own, key)
    positive_int(own, "warmup", minimum=0)
    return own, overrides


def main(argv: Sequence[str] | None = None) -> int:
    from roadmap.bench.timing import run

    try:
        own, overrides = parse(sys.argv[1:] if argv is None else argv)
        result = run(own, overrides)
    except (ValueError, KeyError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = "python -m roadmap.bench " + " ".join(
        [f"{k}={v}" for k, v in own.items() if v != OWN_KEYS[k]] + overrides)
    out = Path(own["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['name']}.json").write_text(json.dumps(result, indent=1) + "\n")
    target = write_report(out)
    print(f"wrote {out / (result['name'] + '.json')} and {target}", file=sys.stderr)
    return 0


def write_report(out: Path) -> Path:
    """``BENCHMARKS.md`` rebuilt from every JSON in ``out`` (beside ``out`` when it is the
    repository's ``benchmarks/``); its path."""
    from roadmap.bench.report import render

    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    target = out.parent / "BENCHMARKS.md" if out.name == "benchmarks" else out / "BENCHMARKS.md"
    target.write_text(render(results))
    return target
