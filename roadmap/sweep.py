"""``make roadmap``: every step of a ladder as one Hydra multirun of ``roadmap.train``, then its
tables (``roadmap.results.collect``).

    python -m roadmap.sweep OUT [--preset cpu] [--seeds 0,1] [--ladder resnet50] [--steps a,b]
                            [-- overrides]

The sweep runs in its own process group and dies with this process; this process dies with its
parent (Linux's parent-death signal), so killing ``make`` alone, or this process, stops every
run of the sweep (each resumes from its checkpoint when rerun) and never leaves one running
orphaned. Whenever the sweep ends, however it ends, the tables are written for what finished.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from roadmap.ladder import step_names

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


def sweep_command(out: str, preset: str, seeds: str, ladder: str,
                  overrides: Sequence[str], steps: Sequence[str] | None = None) -> list[str]:
    """The ladder's steps (or ``steps`` of it) x ``seeds`` as one Hydra multirun into ``out``."""
    steps = list(steps or step_names(ladder))
    return [sys.executable, "-m", "roadmap.train", "--multirun",
            f"step={','.join(steps)}", f"seed={seeds}", f"preset={preset}",
            f"ladder={ladder}", f"hydra.sweep.dir={out}", *overrides]


def run_sweep(command: list[str]) -> int:
    """Run the sweep as a process group; a SIGTERM, SIGINT or SIGHUP here stops the group."""
    proc = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent)
    stopped = []

    def stop(signum, frame) -> None:
        stopped.append(signum)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    code = proc.wait()
    if stopped:
        print(f"roadmap.sweep: stopped by signal {stopped[0]}; rerun the same command to "
              "resume", file=sys.stderr)
        return 128 + stopped[0]
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a ladder as one sweep, then its tables")
    parser.add_argument("out", help="the sweep folder (hydra.sweep.dir)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--ladder", default="resnet50")
    parser.add_argument("--steps", default=None, help="a,b,c of the ladder (default: all)")
    args, overrides = parser.parse_known_args(argv)  # the rest: Hydra overrides
    overrides = [o for o in overrides if o != "--"]
    die_with_parent()
    try:
        steps = args.steps.split(",") if args.steps else None
        command = sweep_command(args.out, args.preset, args.seeds, args.ladder, overrides, steps)
    except ValueError as exc:  # an unknown ladder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = run_sweep(command)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tables are written, even on a 2nd Ctrl-C
    from roadmap.results.collect import main as collect

    if collect([args.out]) != 0:
        status = status or 1
    if status:
        print(f"make roadmap: some runs failed or were stopped; see {args.out}/results.md",
              file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
