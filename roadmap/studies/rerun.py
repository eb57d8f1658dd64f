"""Reproducible means rerun and compared: a sample of a study's committed runs trained again at
this commit, their numbers compared with the recorded ones exactly.

    python -m roadmap.studies.rerun ARCHIVE [--runs 3] [--out REPORT.md] [--work DIR]

``ARCHIVE`` is a study's ``*-runs.tar.gz`` (:mod:`roadmap.studies.records`). ``--runs`` of its
completed runs, spread evenly over the archive's sorted run directories, and every completed run
recorded at a dirty tree (a commit ending ``+dirty``: code no commit holds) are trained again with
the overrides their ``.hydra/overrides.yaml`` holds, each into its own directory under
``--work``; every number of the record (validation and test top-1, top-5 and loss, the last
train loss) and every epoch's train loss must be equal, not close. A machine of another type (CPU
model, vector ISA, thread count) computes other last bits: the report names the machine so that
a mismatch can be read. Exit 0 when every rerun matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from roadmap.rundir import EPOCHS, HYDRA, METRICS

COMPARED = ("val_top1", "val_top5", "val_loss", "top1", "top5", "loss", "train_loss")


def completed_runs(folder: Path) -> list[Path]:
    """The run directories under ``folder`` whose record says completed, sorted."""
    return sorted(m.parent for m in folder.rglob(METRICS)
                  if json.loads(m.read_text()).get("status") == "completed")


def sample(runs: Sequence[Path], count: int) -> list[Path]:
    """``count`` of ``runs`` spread evenly, the first and the last included."""
    if count >= len(runs):
        return list(runs)
    if count == 1:
        return [runs[0]]
    return [runs[round(i * (len(runs) - 1) / (count - 1))] for i in range(count)]


def recorded_dirty(run: Path) -> bool:
    """Whether ``run`` was recorded at a tree with uncommitted code (``commit`` ends +dirty)."""
    return str(json.loads((run / METRICS).read_text()).get("commit")).endswith("+dirty")


def to_rerun(runs: Sequence[Path], count: int) -> list[Path]:
    """The sample of ``runs`` and every run recorded dirty, in the runs' order, each once."""
    picked = set(sample(runs, count)) | {r for r in runs if recorded_dirty(r)}
    return [r for r in runs if r in picked]


def train_losses(run: Path) -> list[float]:
    path = run / EPOCHS
    return [json.loads(line)["train_loss"] for line in path.read_text().splitlines()
            if line.strip()] if path.is_file() else []


def rerun(run: Path, into: Path) -> Path:
    """Train ``run`` again from its overrides into ``into``; the new run directory."""
    overrides = yaml.safe_load((run / HYDRA / "overrides.yaml").read_text())
    subprocess.run([sys.executable, "-m", "roadmap.train", *overrides,
                    f"hydra.run.dir='{into}'", "logger=none", "progress=false"], check=False,
                   stdout=subprocess.DEVNULL)
    return into


def compare(old: Path, new: Path) -> dict:
    """The recorded and the new numbers of one run, and whether they are equal."""
    before = json.loads((old / METRICS).read_text())
    after = json.loads((new / METRICS).read_text()) if (new / METRICS).is_file() else {}
    differ = [k for k in COMPARED if before.get(k) != after.get(k)]
    if train_losses(old) != train_losses(new):
        differ.append("epoch train losses")
    return {"run": str(old), "commit": before.get("commit"), "status": after.get("status"),
            "top1": before.get("top1"), "top1_now": after.get("top1"),
            "val_top1": before.get("val_top1"), "val_top1_now": after.get("val_top1"),
            "differ": differ, "match": not differ and after.get("status") == "completed"}


def report(rows: list[dict], archive: Path, commit: str, machine: str, count: int) -> str:
    dirty = sum(str(r["commit"]).endswith("+dirty") for r in rows)
    lines = [f"# Reruns of {archive.name} at {commit}", "",
             f"`python -m roadmap.studies.rerun {archive} --runs {count}` on {machine}: "
             f"{count} runs spread over the archive and every run recorded at a dirty tree "
             f"({dirty}), each trained again from its overrides; every recorded number and every "
             "epoch's train loss compared for equality.", "",
             "| run | recorded at | top-1 then | top-1 now | val top-1 then | val top-1 now | "
             "equal |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['commit']} | {r['top1']} | {r['top1_now']} | "
                     f"{r['val_top1']} | {r['val_top1_now']} | "
                     + ("yes" if r["match"] else "no: " + ", ".join(r["differ"] or
                                                                   [str(r["status"])])) + " |")
    matched = sum(r["match"] for r in rows)
    return "\n".join(lines) + f"\n\n{matched} of {len(rows)} reruns equal.\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rerun a sample of a study's runs, compare")
    parser.add_argument("archive", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="where to write the report (markdown)")
    parser.add_argument("--work", type=Path, help="where to train (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not args.archive.is_file() or args.runs < 1:
        print(f"error: {args.archive} not found" if not args.archive.is_file() else
              "error: --runs must be at least 1", file=sys.stderr)
        return 2
    import torch

    from roadmap.runtime import code_version, cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        with tarfile.open(args.archive, "r:gz") as tar:
            tar.extractall(work / "recorded", filter="data")
        rows = []
        for run in to_rerun(completed_runs(work / "recorded"), args.runs):
            name = run.relative_to(work / "recorded")
            rows.append(compare(run, rerun(run, work / "rerun" / name)) | {"run": str(name)})
            print(f"roadmap.studies.rerun: {name}: "
                  f"{'equal' if rows[-1]['match'] else 'DIFFERENT'}", file=sys.stderr)
    machine = (f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    text = report(rows, args.archive, code_version() or "unknown", machine, args.runs)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if all(r["match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
