"""Where and how a process computes: processes (``Dist``), device, precision, memory layout.

Shared by training and the benchmarks, so both resolve ``device=auto``, ``precision=auto`` and
``channels_last=auto`` the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from roadmap.errors import RunError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``precision=`` values (but ``auto``) and their autocast dtypes."""


@dataclass
class Dist:
    """This process's place among the training processes (one when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """From torchrun's variables (or, under SLURM with several tasks, submitit's)."""
        if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export()
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.tolist()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when visible, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("device=cuda but no CUDA device is visible; use device=cpu or auto")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device("cpu")


def use_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (None: leave torch's own) and return the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_kernels(threads: int, on_cpu: bool = True, pointwise: str | None = None) -> dict:
    """What decides a CPU run's last bits besides its config: the thread count, the vector
    ISA of torch's kernels (``AVX512``, ``AVX2``, ...), whose depthwise weight gradient runs
    (:func:`roadmap.models.depthwise.kernels`; on a GPU, PyTorch's own: ``native``) and, only
    where they run as oneDNN's convolutions, how the 1x1 convs compute
    (:func:`roadmap.models.net.pointwise_kernels`)."""
    from roadmap.models.depthwise import kernels

    record = {"threads": threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "depthwise": kernels() if on_cpu else "native"}
    return record | ({"pointwise": pointwise} if pointwise is not None else {})


def setup_distributed(dist: Dist, device: torch.device) -> None:
    """Select the process's GPU and join the process group (gloo on CPU, nccl on CUDA)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: bf16 on CUDA, fp32 on the CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return PRECISIONS[precision]


def autocast_factory(dtype: torch.dtype | None, device: torch.device) -> Callable:
    """A function returning the context to run forward passes in."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def resolve_channels_last(value: str | bool, device: torch.device) -> bool:
    """``auto``: channels-last on CPU and CUDA, where the steps train faster in it
    (``python -m roadmap.bench channels_last=false`` against ``=true``: docs/benchmarks.md)."""
    if value == "auto":
        return device.type in ("cpu", "cuda")
    return bool(value)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under ``torch.compile`` and ``DistributedDataParallel``."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (for timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls, the device's queue drained around."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def code_version() -> str | None:
    """The code's git commit (``+dirty`` with uncommitted changes to ``roadmap/``, ``conf/`` or
    ``pyproject.toml``), or None outside a git checkout: what made a result."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                "roadmap", "conf", "pyproject.toml"],
                               cwd=root, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``; elsewhere what ``platform`` says)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
