"""The ladder at a glance: every step's parameters and GFLOPs, measured, beside the paper's.

    python -m roadmap.describe [ladder=resnet50|resnet200] [format=table|markdown|json]
                               [steps=gelu,layer_norm] [image_size=224] [convention=fvcore|macs]
                               [any Hydra override, e.g. model.kernel_size=9 model.num_classes=10]

GFLOPs are multiply-accumulates / 1e9 of one image, counted by ``torch.utils.flop_counter`` on the
built module the way the paper's fvcore counts (see :mod:`roadmap.models.flops`), at 224x224
and 1000 classes unless overridden.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import pandas as pd
import torch

from roadmap.cli import parse_key_values, positive_int
from roadmap.conf import compose, model_config
from roadmap.errors import first_line
from roadmap.ladder import GFLOPS_NOTES, ladder_steps
from roadmap.models import build_model, count_gflops, count_params

FORMATS = ("table", "markdown", "json")
# the paper's setting, whatever data set the config trains on; overrides of these keys win
PAPER_SETTINGS = ("model.num_classes=1000", "model.in_chans=3", "protocol=paper")
"""The paper's networks: ImageNet's classes and channels, the recipes' own regularisers."""
OWN_KEYS = {"format": "table", "steps": "", "image_size": "224", "convention": "fvcore",
            "ladder": "resnet50"}


def describe(ladder: str = "resnet50", overrides: Sequence[str] = (), image_size: int = 224,
             steps: Sequence[str] | None = None, convention: str = "fvcore") -> list[dict]:
    """One record per step of ``ladder``: measured params and GFLOPs, the paper's figures."""
    chosen = list(ladder_steps(ladder))
    if steps:
        names = [s.name for s in chosen]
        unknown = [s for s in steps if s not in names]
        if unknown:
            raise ValueError(f"steps={','.join(unknown)} not on ladder={ladder}; "
                             f"valid: {', '.join(names)}")
        chosen = [s for s in chosen if s.name in steps]
    given = {o.split("=")[0].lstrip("+~") for o in overrides}
    paper = [o for o in PAPER_SETTINGS if o.split("=")[0] not in given]
    records = []
    for step in chosen:
        cfg = compose([f"ladder={ladder}", f"step={step.name}", *paper, *overrides])
        mcfg = model_config(cfg)
        with torch.device("meta"):  # shapes only: counting needs no weights and no compute
            model = build_model(mcfg)
        gflops = count_gflops(model, image_size, mcfg.in_chans, convention)
        diff = None if step.paper_gflops is None else gflops - step.paper_gflops
        records.append({
            "index": step.index,
            "step": step.name,
            "adopted": step.adopted,
            "params": count_params(model),
            "gflops": round(gflops, 4),
            "paper_gflops": step.paper_gflops,
            "gflops_diff": None if diff is None else round(diff, 4),
            "paper_top1": step.paper_top1,
            "change": step.change,
            "note": GFLOPS_NOTES.get(step.name, "") if ladder == "resnet50" else "",
        })
    return records


def render(records: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2)
    df = pd.DataFrame(records)
    notes = [(r["step"], r["note"]) for r in records if r["note"]]
    df = df.drop(columns=["note", "change"])
    df["adopted"] = df["adopted"].map({True: "yes", False: "side branch"})
    df["params"] = df["params"].map("{:,}".format)
    for column, pattern in [("gflops", "{:.3f}"), ("paper_gflops", "{:.2f}"),
                            ("gflops_diff", "{:+.3f}"), ("paper_top1", "{:.2f}")]:
        df[column] = df[column].map(lambda v, p=pattern: "" if pd.isna(v) else p.format(v))
    if fmt == "markdown":
        text = df.to_markdown(index=False, colalign=["left"] * 3 + ["right"] * 5)
    else:
        text = df.to_string(index=False)
    for name, note in notes:
        text += f"\n\n{name}: {note}"
    return text


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    own, overrides = parse_key_values(argv, OWN_KEYS,
                                      "ladder=resnet200 format=json model.kernel_size=9")
    if own["format"] not in FORMATS:
        raise ValueError(f"format={own['format']} is invalid; valid values: {', '.join(FORMATS)}")
    positive_int(own, "image_size")
    return own, overrides


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        own, overrides = parse_args(argv)
        records = describe(
            ladder=own["ladder"], overrides=overrides, image_size=int(own["image_size"]),
            steps=own["steps"].split(",") if own["steps"] else None,
            convention=own["convention"],
        )
    except Exception as exc:  # one clear line, not a traceback
        print(f"error: {first_line(exc, 2000)}", file=sys.stderr)
        return 2
    print(render(records, own["format"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
