"""A run directory and everything in it: the only module that knows its files.

``<sweep or preset folder>/<step>[,<variant>]/seed<N>/`` holds:

- ``.lock``: one writer at a time, an advisory ``fcntl`` lock held for the whole run and
  released by the operating system however the process ends (``kill -9`` included), so it is
  never stale; a second writer fails at once, naming the holder;
- ``config.json``: what the run computes (its config less the volatile keys), written when the
  run claims the directory. Once the directory holds work (a checkpoint or a completed record),
  another config is refused before anything is written; a run that failed before its first
  checkpoint binds nothing;
- ``.hydra/``: Hydra's config, its own and the overrides, written once the directory is the
  run's (they name the run for :mod:`roadmap.results.collect`);
- ``epochs.jsonl``: one record per finished epoch, always agreeing with the checkpoint;
- ``last.pt``: the checkpoint, a plain state dict (tensors and plain values) loaded with
  ``weights_only=True``;
- ``metrics.json``: how the run ended, a :class:`RunRecord` (completed, failed or diverged).

Every write goes to a temporary file, is flushed to disk and renamed over the old one, so a kill
or a power cut at any moment leaves the previous file whole; a full disk is one line.

A run's directory name is made here too (:func:`run_subdir`): the variant lists the overrides
that change what is computed (``epochs=1,model.kernel_size=9``). Hydra (through the
``roadmap.run_subdir`` resolver), resume and the results tables all use these functions, so they
cannot disagree about which keys make two runs different.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from omegaconf import DictConfig, OmegaConf

from roadmap.errors import RunError, first_line
from roadmap.schema import is_number

LOCK, CONFIG, METRICS, EPOCHS, CHECKPOINT, HYDRA = (".lock", "config.json", "metrics.json",
                                                     "epochs.jsonl", "last.pt", ".hydra")
REFUSED, MULTIRUN = "refused.jsonl", "multirun.yaml"
"""In a sweep's folder: the runs a sweep refused (one JSON line each, appended by the job that
refused), and Hydra's record of what the sweep asked for (written as the sweep starts)."""

@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM held while the block runs and raised again when it ends (their
    handlers run in the main thread only, so elsewhere nothing is held)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    before = {s: signal.signal(s, lambda number, frame: pending.append(number))
              for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in pending:
            signal.raise_signal(number)


# -- which keys name a run ----------------------------------------------------------------------

VOLATILE_KEYS = ("progress", "device", "workers", "augment_batches", "logger",
                 "checkpoint_every", "threads")
"""Keys that say how a run runs, not what it computes: they may change when it resumes.
``workers`` and ``augment_batches`` (how many loader processes, how many batches one call
augments) change which random numbers an image draws but not what is drawn from, like the
device. ``threads`` changes a CPU run's sums in their last bits: it does not name a run, but
a checkpoint records it (and torch's CPU kernels' ISA) and a resume under another is refused
(:meth:`RunDir.resume`).
(``eval_batch_size`` is not one: it changes the evaluation's float sums in their last bits.)"""

RETIRED_KEYS = ("ladder.first_step",)
"""Keys that configs recorded before they were removed still hold: they computed nothing, so a
stored config is compared without them."""

INTRODUCED_KEYS = {"data.resize": 1.0}
"""Keys added to the schema after runs were recorded, with the value that computes what those
runs computed: a stored config without one is read as holding that value."""

OUTSIDE_THE_VARIANT = ("step", "seed", "preset", "ladder", *VOLATILE_KEYS)
"""Keys never in the variant: the step and seed have their own parts of the path, the preset
and ladder name the sweep directory, and the volatile keys name nothing."""

HYDRA_PREFIXES = ("hydra.", "hydra/")


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def names_the_run(key: str) -> bool:
    """Whether an override of ``key`` makes a run a variant of its step."""
    key = key.lstrip("+~")
    if key.startswith(HYDRA_PREFIXES):
        return False
    return not any(key == k or key.startswith(k + ".") for k in OUTSIDE_THE_VARIANT)


def variant(overrides: Iterable[str]) -> str:
    """The overrides (``key=value`` strings) that name a run, sorted and comma-joined."""
    return ",".join(sorted(str(o) for o in overrides if names_the_run(_key(str(o)))))


def run_subdir(step: str, seed: Any, overrides: Iterable[str]) -> str:
    """``<step>[,<variant>]/seed<N>``: a run's directory below its sweep (or preset) folder."""
    return subdir(step, variant(overrides), seed)


def subdir(step: str, name: str, seed: Any) -> str:
    """The directory of ``step``'s run of variant ``name`` ("" for none) and ``seed``."""
    return f"{step}{',' + name if name else ''}/seed{seed}"


def recorded_config(values: Mapping) -> dict:
    """What ``config.json`` records of a run's resolved config (a plain dict): all of it but the
    volatile keys, as JSON gives it back, so that a stored and a requested config compare
    equal."""
    return json.loads(json.dumps({k: v for k, v in values.items() if k not in VOLATILE_KEYS}))


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def without_retired(config: dict) -> dict:
    """A stored config without the :data:`RETIRED_KEYS`."""
    for key in RETIRED_KEYS:
        node, _, leaf = key.rpartition(".")
        if isinstance(config.get(node), dict):
            config[node].pop(leaf, None)
    return config


def as_recorded_now(stored: dict, requested: dict) -> dict:
    """A stored config as it would be recorded today: without the :data:`RETIRED_KEYS`, and
    with each of the :data:`INTRODUCED_KEYS` it lacks, where ``requested`` has that key, at the
    value that computes what the stored run computed."""
    stored = without_retired(stored)
    for key, value in INTRODUCED_KEYS.items():
        node, _, leaf = key.rpartition(".")
        if isinstance(stored.get(node), dict) and leaf in (requested.get(node) or {}):
            stored[node].setdefault(leaf, value)
    return stored


def shown_keys(keys: list[str], most: int = 6) -> str:
    """Dotted keys for a message: the top level's first (``preset_name`` before ``data.*``)."""
    keys = sorted(keys, key=lambda k: (k.count("."), k))
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


# -- writing files ------------------------------------------------------------------------------

def _no_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` or what it was raised from is a full disk (torch.save wraps it)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into ``path.tmp``, fsync, rename over ``path``, fsync the folder. On any
    failure the temporary file is removed; a full disk is a :class:`RunError` naming ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _no_space(exc):
            raise RunError(f"no space left on the device writing {path}; free some space or "
                           "choose another hydra.run.dir (hydra.sweep.dir), then rerun to "
                           "resume") from exc
        raise
    _fsync_folder(path.parent)


def write_json(path: Path, data: dict) -> None:
    text = (json.dumps(data, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


# -- how a run ended ----------------------------------------------------------------------------

STATUSES = ("completed", "failed", "diverged")
IDENTITY = ("step", "ladder", "seed", "preset", "dataset", "recipe", "protocol", "epochs",
            "scale")
"""What a record says of the run it ends: enough to file it without its ``.hydra/``."""
REQUIRED = ("top1", "params", "gflops")
"""Numbers a completed run always records."""


@dataclass
class RunRecord:
    """How a run ended: its identity (:data:`IDENTITY`), a status of :data:`STATUSES`, the error
    that ended a failed or diverged run, and its metrics (top-1, params, GFLOPs... when
    completed). Stored flat in ``metrics.json``."""

    identity: dict
    status: str
    metrics: dict = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}")
        missing = [k for k in REQUIRED if not is_number(self.metrics.get(k))]
        if self.status == "completed" and missing:
            raise ValueError(f"says completed but lacks {', '.join(missing)}")

    @property
    def top1(self) -> float | None:
        return self.metrics.get("top1")

    def to_json(self) -> dict:
        """The record as ``metrics.json`` holds it (flat, and as JSON gives it back)."""
        error = {"error": self.error} if self.error is not None else {}
        flat = {**self.identity, "status": self.status, **error, **self.metrics}
        return json.loads(json.dumps(flat, default=str))

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """The record ``metrics.json`` holds; a ValueError saying what is wrong otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"holds {type(data).__name__}, not a record")
        rest = {k: v for k, v in data.items() if k not in (*IDENTITY, "status", "error")}
        return cls({k: data[k] for k in IDENTITY if k in data}, data.get("status"), rest,
                   data.get("error"))


# -- the directory ------------------------------------------------------------------------------

class RunLocked(RunError):
    """Another process is writing the run directory."""


class RunRefused(RunError):
    """The run directory holds a run of another config."""


class CorruptRecord(ValueError):
    """A run's record cannot be read as one; the message names the file and what is wrong."""


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "config")
"""What every checkpoint holds (the state dict :mod:`roadmap.train.state` makes)."""


def refuse_other_kernels(path: Path, was: dict, now: dict) -> None:
    """A :class:`RunRefused` line when a checkpoint's ``cpu`` record (:func:`roadmap.runtime.
    cpu_kernels`) differs from this process's in what moves the sums' last bits. ``pointwise``
    is recorded only where 1x1 convs run as oneDNN's convolutions (absent: matrix products)."""
    for key in [*was, *({"pointwise"} & (now.keys() - was.keys()))]:
        before = was.get(key)
        after = now.get(key) if key == "pointwise" else now.get(key, before)
        if before == after:
            continue
        what, fix, name = {
            "threads": (f"on {before} CPU threads and this process has {after}",
                        f"rerun with threads={before}", "thread count"),
            "depthwise": (f"with the {before} depthwise kernels and this process has {after}",
                          "rerun where they are (roadmap/models/depthwise.py)",
                          "depthwise kernel"),
            "pointwise": (f"with its 1x1 convs as {before or 'matrix products'} and this process "
                          f"runs them as {after or 'matrix products'}",
                          "rerun at the commit the run records (roadmap/models/net.py, "
                          "MATMUL_PIXELS)", "way 1x1 convs compute"),
        }.get(key, (f"with torch's {before} kernels and this machine runs {after}",
                    f"resume it on a {before} machine", "kernels' ISA"))
        raise RunRefused(f"{path} was trained {what}: the {name} moves the sums' last bits, "
                         f"so the run would mix two sets of numbers; fix: {fix}, or remove it "
                         f"to run this run from its start (rm {path})")


class RunDir:
    """One run's directory: its lock, config, records, epochs, checkpoint and Hydra files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    # the writer

    def lock(self) -> None:
        """Become the directory's only writer, or raise :class:`RunLocked` at once."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunError(f"{self.path / LOCK} cannot be opened as the run's lock "
                           f"({type(exc).__name__}: {first_line(exc)}); fix: remove it if it is "
                           "not a file (it holds nothing of the run), or choose another "
                           "hydra.run.dir") from None
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

    def busy(self) -> bool:
        """Whether another process holds the directory's lock (is writing the run)."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    # the config

    def stored_config(self) -> dict | None:
        """The config the directory's run was made with, as stored (compared through
        :func:`as_recorded_now`); None if none."""
        path = self.path / CONFIG
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise RunError(f"{path} is unreadable ({type(exc).__name__}: {first_line(exc)}); "
                           f"remove {path} (the run resumes from its checkpoint, if it has one) "
                           "or choose another hydra.run.dir") from None
        if not isinstance(stored, dict):
            raise RunError(f"{path} holds {type(stored).__name__}, not a config; remove "
                           f"{path} (the run resumes from its checkpoint, if it has one) or "
                           "choose another hydra.run.dir")
        return stored

    def holds_work(self) -> bool:
        if self.has_checkpoint():
            return True
        try:
            return json.loads((self.path / METRICS).read_text()).get("status") == "completed"
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            return False

    def check_config(self, config: dict) -> None:
        """Refuse (:class:`RunRefused`) a config other than the one whose work the directory
        holds."""
        stored = self.stored_config() if self.holds_work() else None
        changed = diff_keys(as_recorded_now(stored, config), config) if stored is not None \
            else []
        if changed:
            raise RunRefused(f"{self.path} holds a run with another config (differs in "
                             f"{shown_keys(changed)}); choose another hydra.run.dir (make "
                             "roadmap: another OUT) or remove that directory")

    def claim(self, config: dict) -> None:
        """Record ``config`` as the directory's."""
        write_json(self.path / CONFIG, config)

    # how it ended

    def read_record(self) -> RunRecord | None:
        """The record of how the run ended, None if it has not; :class:`CorruptRecord` saying
        what is wrong when the file cannot be read as one."""
        path = self.path / METRICS
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            raise CorruptRecord(f"{METRICS} unreadable: {type(exc).__name__}: "
                                f"{first_line(exc)}") from None
        try:
            return RunRecord.from_json(data)
        except ValueError as exc:
            raise CorruptRecord(f"{METRICS} {exc}") from None

    def completed(self) -> RunRecord | None:
        """The record of a completed run, or None. An unreadable or incomplete record is
        reported and ignored: the run resumes from its checkpoint."""
        try:
            record = self.read_record()
        except CorruptRecord as exc:
            start = CHECKPOINT if self.has_checkpoint() else "the start"
            print(f"roadmap: {self.path}: {exc}; running again from {start}", file=sys.stderr)
            return None
        return record if record is not None and record.status == "completed" else None

    def write_record(self, record: RunRecord) -> None:
        write_json(self.path / METRICS, record.to_json())

    # epochs

    def start_epochs(self, history: list[dict]) -> None:
        """Rewrite the epoch log as ``history``: it always agrees with the checkpoint resumed."""
        (self.path / EPOCHS).write_text("".join(json.dumps(h) + "\n" for h in history))

    def append_epoch(self, record: dict) -> None:
        with open(self.path / EPOCHS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def end_epoch(self, record: dict, checkpoint: Mapping[str, Any] | None) -> None:
        """Save ``checkpoint`` (when given) and add ``record`` to the epoch log as one step: a
        Ctrl-C or SIGTERM that arrives meanwhile is held until both are written, so the log
        never lags the checkpoint it belongs to."""
        with _signals_held():
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            self.append_epoch(record)

    def epochs_logged(self) -> int:
        try:
            return len((self.path / EPOCHS).read_bytes().splitlines())
        except OSError:
            return 0

    def started_after(self, when: float) -> bool:
        """Whether a run took the directory's lock at or after ``when`` (a timestamp)."""
        return self._written_after(LOCK, when)

    def ended_after(self, when: float) -> bool:
        """Whether a run recorded how it ended at or after ``when`` (a timestamp)."""
        return self._written_after(METRICS, when)

    def _written_after(self, name: str, when: float) -> bool:
        try:
            return (self.path / name).stat().st_mtime >= when
        except OSError:
            return False

    # the checkpoint

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def save_checkpoint(self, state: dict) -> None:
        """Write then rename, so that a kill leaves the previous checkpoint whole."""
        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f))

    def resume(self, config: dict, cpu: dict | None) -> dict | None:
        """The checkpoint to go on from (None: none), if it is this run's: made with ``config``
        and, on the CPU, the same ``cpu`` (``threads`` and torch's ``cpu_capability``, the
        vector ISA of its kernels; None: not compared). Another run's or another architecture's
        checkpoint, or another thread count or ISA, is a :class:`RunRefused` line."""
        checkpoint = self.read_checkpoint()
        if checkpoint is None:
            return None
        path = self.path / CHECKPOINT
        changed = diff_keys(as_recorded_now(json.loads(checkpoint["config"]), config), config)
        if changed:
            raise RunRefused(f"{path} is the checkpoint of another run (its config differs in "
                             f"{shown_keys(changed)}); fix: move it back to its own run "
                             f"directory, or remove it to run this run from its start (rm "
                             f"{path})")
        if cpu is not None:
            refuse_other_kernels(path, checkpoint.get("cpu", {}), cpu)
        return checkpoint

    def unfit_checkpoint(self, exc: BaseException) -> RunError:
        """The line for a checkpoint whose tensors do not fit the run's model or optimizer."""
        path = self.path / CHECKPOINT
        return RunRefused(f"{path} does not fit this run ({type(exc).__name__}: "
                          f"{first_line(exc)[:200]}); fix: remove it to run this run from its "
                          f"start (rm {path})")

    def read_checkpoint(self) -> dict | None:
        """The checkpoint (tensors and plain values only) or None; a :class:`RunError` naming
        the file and the fix if it is truncated, corrupt or holds anything else."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            json.loads(checkpoint["config"])
        except Exception as exc:
            raise RunError(f"{path} is unreadable ({first_line(exc)}); remove it to run this "
                           f"run again from its start (rm {path})") from None
        return checkpoint

    # Hydra's files

    def write_hydra(self, cfg: DictConfig, hydra_cfg: DictConfig) -> None:
        """What Hydra writes into ``.hydra/``: the job's config, Hydra's, and the overrides."""
        out = self.path / HYDRA
        out.mkdir(parents=True, exist_ok=True)
        for name, node in (("config.yaml", cfg),
                           ("hydra.yaml", OmegaConf.create({"hydra": hydra_cfg})),
                           ("overrides.yaml", hydra_cfg.overrides.task)):
            text = OmegaConf.to_yaml(node).encode()
            atomic_write(out / name, lambda f, text=text: f.write(text))

    def is_run(self) -> bool:
        return (self.path / HYDRA / "config.yaml").is_file() or (self.path / METRICS).is_file()

    def identity(self) -> dict:
        """Step, seed, ladder, preset and variant of the run, from its ``.hydra/`` files."""
        cfg = OmegaConf.load(self.path / HYDRA / "config.yaml")
        hydra_cfg = OmegaConf.load(self.path / HYDRA / "hydra.yaml")
        return {"step": str(cfg.step_name), "seed": int(cfg.seed),
                "ladder": str(cfg.ladder.name), "preset": str(cfg.preset_name),
                "variant": variant(hydra_cfg.hydra.overrides.task)}

    def identity_from_name(self) -> dict:
        """Step, variant and seed from the directory's name, for a run whose ``.hydra/`` files
        cannot be read ({} when the name is not a run's)."""
        step, _, name = self.path.parent.name.partition(",")
        seed = self.path.name[len("seed"):]
        if not self.path.name.startswith("seed") or not seed.lstrip("-").isdigit():
            return {}
        return {"step": step, "variant": name, "seed": int(seed)}


# -- a sweep's folder ---------------------------------------------------------------------------

def record_refusal(run_dir: Path, sweep_dir: Path, reason: str) -> None:
    """Note in the sweep's folder that the sweep refused ``run_dir`` (it holds another
    config's run, which is left untouched), and why."""
    line = json.dumps({"run": str(Path(run_dir).relative_to(sweep_dir)), "time": time.time(),
                       "reason": reason})
    with open(Path(sweep_dir) / REFUSED, "a") as f:
        f.write(line + "\n")


def sweep_started(sweep_dir: Path) -> float | None:
    """When the sweep last run into ``sweep_dir`` started (its ``multirun.yaml``), or None."""
    try:
        return (Path(sweep_dir) / MULTIRUN).stat().st_mtime
    except OSError:
        return None


def refusals(sweep_dir: Path, since: float | None = None) -> dict[str, str]:
    """``{run subdir: reason}`` of the runs refused since ``since`` (default: since the last
    sweep started); a damaged line is skipped."""
    since = sweep_started(sweep_dir) if since is None else since
    try:
        lines = (Path(sweep_dir) / REFUSED).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in lines:
        try:
            entry = json.loads(line)
            if since is None or entry["time"] >= since:
                found[str(entry["run"])] = str(entry["reason"])
        except (ValueError, TypeError, KeyError):
            continue
    return found


def find_run_dirs(sweep_dir: Path) -> list[RunDir]:
    """The run directories below a sweep folder (those Hydra wrote files for), sorted."""
    found = []
    for config in sorted(Path(sweep_dir).rglob(f"{HYDRA}/config.yaml")):
        run = RunDir(config.parent.parent)
        if run.path != Path(sweep_dir) or run.is_run():
            found.append(run)
    return found
