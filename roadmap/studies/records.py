"""A long study's finished runs, kept in the repository so that it survives the machine.

    python -m roadmap.studies.records save SWEEP ARCHIVE
    python -m roadmap.studies.records restore ARCHIVE SWEEP

A study of many hours spans several sessions, and ``runs/`` does not survive a new machine.
``save`` packs what makes a run *finished* in the sweep's folder (each run directory's config,
record, epoch log and Hydra's files (:mod:`roadmap.rundir` names them), and the sweeps'
``multirun.yaml``; never a checkpoint) into a ``.tar.gz``, committed beside the study's results.
``restore`` unpacks it into a sweep folder, never over a file that is there: a run the archive
holds is then skipped by the sweep as completed (its config still binds the directory to it),
and an unfinished run is not in the archive, so it starts again from its first epoch. Only runs
whose record says how they ended are packed.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from roadmap.rundir import CONFIG, EPOCHS, HYDRA, METRICS, MULTIRUN

KEPT = (CONFIG, METRICS, EPOCHS)


def finished_files(sweep: Path) -> list[Path]:
    """The files ``save`` packs, relative to ``sweep``, sorted."""
    files = sorted(sweep.rglob(MULTIRUN))
    for metrics in sorted(sweep.rglob(METRICS)):
        run = metrics.parent
        if not (run / CONFIG).is_file():
            continue
        files += [run / name for name in KEPT if (run / name).is_file()]
        if (run / HYDRA).is_dir():
            files += sorted(p for p in (run / HYDRA).iterdir() if p.is_file())
    return [f.relative_to(sweep) for f in files]


def save(sweep: Path, archive: Path) -> int:
    """Pack the finished runs of ``sweep`` into ``archive`` (rewritten whole, atomically); the
    number of runs packed. The archive's bytes depend only on the files' contents (no times,
    owners or modes), so saving an unchanged study leaves the committed file unchanged."""
    files = finished_files(sweep)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in files:
            data = (sweep / name).read_bytes()
            info = tarfile.TarInfo(str(name))
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(archive)
    return sum(1 for f in files if f.name == METRICS)


def restore(archive: Path, sweep: Path) -> tuple[int, int]:
    """Unpack ``archive`` into ``sweep``: (runs restored, runs already there). A run directory
    that already holds a record or a config is left as it is, whatever the archive says."""
    restored = kept = 0
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        runs = {Path(m.name).parent for m in members if Path(m.name).name == METRICS}
        for run in sorted(runs):
            here = sweep / run
            if (here / METRICS).exists() or (here / CONFIG).exists():
                kept += 1
                continue
            for member in members:
                if Path(member.name).parent in (run, run / HYDRA):
                    tar.extract(member, sweep, filter="data")
            restored += 1
        for member in members:
            if Path(member.name).name == MULTIRUN and not (sweep / member.name).exists():
                tar.extract(member, sweep, filter="data")
    return restored, kept


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a study's finished runs, kept in the repo")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="pack SWEEP's finished runs into ARCHIVE")
    s.add_argument("sweep", type=Path)
    s.add_argument("archive", type=Path)
    r = sub.add_parser("restore", help="unpack ARCHIVE into SWEEP (never over a file)")
    r.add_argument("archive", type=Path)
    r.add_argument("sweep", type=Path)
    args = parser.parse_args(argv)
    source = args.sweep if args.command == "save" else args.archive
    if not source.exists():
        print(f"error: {source} not found", file=sys.stderr)
        return 2
    if args.command == "save":
        count = save(args.sweep, args.archive)
        print(f"roadmap.studies.records: {count} finished runs of {args.sweep} -> {args.archive}")
        return 0
    restored, kept = restore(args.archive, args.sweep)
    print(f"roadmap.studies.records: {restored} runs restored into {args.sweep} from "
          f"{args.archive}; {kept} already there (kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
