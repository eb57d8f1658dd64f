"""Who may write a run directory: one process at a time, for one config.

- One writer: an advisory ``fcntl`` lock on ``<run dir>/.lock``, held for the whole run and
  released by the operating system when the process ends however it ends (``kill -9``
  included), so a lock is never stale. A second writer fails at once, naming the holder.
- One config: ``config.json`` records the run's config (volatile keys aside) when the run
  starts. Once the directory holds work (a ``last.pt`` or a completed ``metrics.json``), a rerun
  with another config is refused before anything is written, and a completed run is reused
  only by its own config. A run that failed before its first checkpoint binds nothing: fix the
  value and rerun.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from roadmap.runs import diff_keys
from roadmap.runtime import RunError

LOCK, CONFIG, METRICS, CHECKPOINT = ".lock", "config.json", "metrics.json", "last.pt"


class RunLocked(RunError):
    """Another process is writing the run directory."""


class RunRefused(RunError):
    """The run directory holds a run of another config."""


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def lock(self) -> None:
        """Become the directory's only writer, or raise :class:`RunLocked` at once."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path} is being written by {holder}; wait for that run to "
                            "end, or choose another hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd

    def unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def stored_config(self) -> dict | None:
        """The config the directory's run was made with: ``config.json``, or for directories
        from before it existed, the one in ``last.pt``."""
        path = self.path / CONFIG
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunError(f"{path} is unreadable ({exc}); remove that run directory or "
                               "choose another hydra.run.dir") from None
        if (self.path / CHECKPOINT).is_file():
            from roadmap.train.checkpoint import read_checkpoint

            return json.loads(read_checkpoint(self.path / CHECKPOINT)["config"])
        return None

    def holds_work(self) -> bool:
        if (self.path / CHECKPOINT).is_file():
            return True
        try:
            return json.loads((self.path / METRICS).read_text()).get("status") == "completed"
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            return False

    def check_config(self, config: dict) -> None:
        """Refuse (:class:`RunRefused`) a config other than the one whose work the directory
        holds."""
        stored = self.stored_config() if self.holds_work() else None
        changed = diff_keys(stored, config) if stored is not None else []
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more"
                                               if len(changed) > 6 else "")
            raise RunRefused(f"{self.path} holds a run with another config (differs in "
                             f"{shown}); choose another hydra.run.dir (make roadmap: another "
                             "OUT) or remove that directory")

    def claim(self, config: dict) -> None:
        """Record ``config`` as the directory's."""
        from roadmap.train.checkpoint import write_json

        write_json(self.path / CONFIG, config)

    def completed_metrics(self) -> dict | None:
        """The metrics of a completed run, or None. An unreadable or incomplete
        ``metrics.json`` is reported and ignored: the run resumes from ``last.pt``."""
        path = self.path / METRICS
        if not path.is_file():
            return None
        try:
            metrics = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            print(f"roadmap: {path} is unreadable ({exc}); running again from "
                  f"{CHECKPOINT if (self.path / CHECKPOINT).is_file() else 'the start'}",
                  file=sys.stderr)
            return None
        if not isinstance(metrics, dict) or metrics.get("status") != "completed":
            return None
        if not isinstance(metrics.get("top1"), (int, float)):
            print(f"roadmap: {path} says completed but has no top1; running again",
                  file=sys.stderr)
            return None
        return metrics
