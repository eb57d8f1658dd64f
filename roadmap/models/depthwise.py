"""Depthwise convolutions on the CPU: the function ``torch.nn.functional.conv2d`` computes, with
its gradients, at a cost near the forward's.

Two things make PyTorch's own CPU depthwise backward slow (BENCHMARKS.md: 14-64x its forward
in the ladder's steps):

- **Taps that only ever meet padding.** With stride 1 and "same" padding, a map of ``n`` pixels
  is reached by the central ``2n - 1`` taps of a kernel only (the centre one on a 1x1 map). The
  conv with the kernel cropped to them (and the padding to ``n - 1``) is the same function; the
  other taps' gradient is exactly zero either way, and the parameter keeps its k x k shape.
- **The weight gradient**, a per-channel correlation of the input with the output gradient, is
  computed by a small compiled kernel (``depthwise.cpp``: vectorised over channels in the
  channels-last layout, sums held in registers over cache-sized chunks of output rows,
  per-thread accumulators summed in a fixed order). It is built at first use by
  ``torch.utils.cpp_extension`` (gcc and ninja, which ``make`` installs; cached in
  ``TORCH_EXTENSIONS_DIR``). The input gradient is PyTorch's forward conv of the output
  gradient with the kernel flipped (about one forward; oneDNN's own costs several).

Used for fp32 tensors on the CPU in eager mode; on a GPU, in another dtype, while
``torch.compile`` or ``torch.export`` traces, or where the kernel cannot be built, it is
PyTorch's own. :func:`kernels` says which a process uses (runs record it: the two sum in other
orders, so the last bits differ).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("depthwise.cpp")
_built: list = []
"""The extension module once loaded, or None when it could not be built (tried once)."""
_native: list = []
"""Non-empty inside :func:`native`."""


@contextlib.contextmanager
def native() -> Iterator[None]:
    """PyTorch's own depthwise convolutions while inside (the full kernel: what the FLOP
    counter counts, and the reference the tests and benchmarks compare with)."""
    _native.append(True)
    try:
        yield
    finally:
        _native.pop()


def extension():
    """The compiled weight-gradient kernel, built at first use; None where it cannot be (no
    compiler, no ninja, ``ROADMAP_DEPTHWISE=native``): PyTorch's own kernel is used then."""
    if not _built:
        _built.append(_build())
    return _built[0]


def _build():
    if os.environ.get("ROADMAP_DEPTHWISE", "").lower() == "native":
        return None
    try:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA"
        venv_bin = str(Path(sys.executable).parent)  # ninja, installed beside this Python
        if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load

        return load(name="roadmap_depthwise", sources=[str(SOURCE)],
                    extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"],
                    verbose=False)
    except Exception as exc:  # no compiler, no ninja, no headers: the native kernel
        print(f"roadmap: the depthwise kernel could not be built ({type(exc).__name__}: "
              f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}); using "
              "PyTorch's own", file=sys.stderr)
        return None


def op(name: str):
    """``torch.library.custom_op`` (one op that a dispatch mode sees whole); on a torch without
    it (older than 2.4, e.g. a GPU machine's own), the plain function."""
    custom = getattr(torch.library, "custom_op", None)
    if custom is not None:
        return custom(name, mutates_args=())

    def plain(fn):
        fn.register_fake = lambda fake: fake
        return fn
    return plain


KERNEL = "roadmap-2"
"""The compiled weight gradient's name in run records, with the version of its order of
summation: ``roadmap-2`` since commit 4d8db2b (registers over chunks of rows); runs before it
recorded ``roadmap`` (one row at a time). A checkpoint made under one is not resumed under the
other (:meth:`roadmap.rundir.RunDir.resume`)."""


def kernels() -> str:
    """:data:`KERNEL` (this module's weight gradient) or ``native`` (PyTorch's), as used on the
    CPU."""
    return KERNEL if extension() is not None else "native"


def crop(weight: torch.Tensor, padding: tuple[int, int], size: tuple[int, int]
         ) -> tuple[torch.Tensor, tuple[int, int], tuple[slice, slice]]:
    """The kernel cropped to the taps that can reach a ``size`` map (stride 1, "same" padding),
    the padding that keeps the output's size, and the slices taken."""
    cuts, pads = [], []
    for k, p, n in zip(weight.shape[-2:], padding, size, strict=True):
        if 2 * p + 1 == k and n - 1 < p:
            start = p - (n - 1)
            cuts.append(slice(start, start + 2 * n - 1))
            pads.append(n - 1)
        else:
            cuts.append(slice(0, k))
            pads.append(p)
    return weight[:, :, cuts[0], cuts[1]], (pads[0], pads[1]), (cuts[0], cuts[1])


@op("roadmap::depthwise_weight_grad")
def weight_grad(x: torch.Tensor, grad: torch.Tensor, kh: int, kw: int, sh: int, sw: int,
                ph: int, pw: int) -> torch.Tensor:
    """The weight gradient ``(C, 1, kh, kw)`` by the compiled kernel (one op, so that a
    dispatch mode, e.g. the benchmarks' breakdown, sees it as one)."""
    return extension().weight_grad(x, grad, kh, kw, sh, sw, ph, pw)


@weight_grad.register_fake
def _(x, grad, kh, kw, sh, sw, ph, pw):
    return x.new_empty(x.shape[1], 1, kh, kw)


@op("roadmap::depthwise_input_grad")
def input_grad(grad: torch.Tensor, weight: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """The input gradient of a stride-1 "same" depthwise conv: the forward conv of ``grad``
    with the kernel flipped (oneDNN's own depthwise input gradient costs several forwards)."""
    return F.conv2d(grad, weight.flip(-1, -2), None, 1, (ph, pw), 1, grad.shape[1])


@input_grad.register_fake
def _(grad, weight, ph, pw):
    return torch.empty_like(grad)


class _Depthwise(torch.autograd.Function):
    """A depthwise conv (stride, padding; weight ``(C, 1, kh, kw)``) whose weight gradient is
    the compiled kernel's, the input gradient PyTorch's, the bias gradient a sum."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding)
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x and tuple(stride) == (1, 1) and all(
                2 * p + 1 == k for p, k in zip(padding, weight.shape[-2:], strict=True)):
            grad_x = input_grad(grad, weight, *padding)
        elif need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, (1, 1), False, [0, 0], x.shape[1],
                [True, False, False])[0]
        if need_w:
            kh, kw = weight.shape[-2:]
            grad_w = weight_grad(x, grad, kh, kw, *stride, *padding)
        if need_b:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def _ours(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this module's path applies: eager fp32 on the CPU."""
    return (not _native and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.is_autocast_enabled("cpu"))


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=C)`` for a depthwise weight
    ``(C, 1, kh, kw)``: cropped and with the compiled weight gradient where :func:`_ours`."""
    if not _ours(x, weight):
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])
    if tuple(stride) == (1, 1):
        weight, padding, _ = crop(weight, tuple(padding), tuple(x.shape[-2:]))
    if torch.is_grad_enabled() and extension() is not None and (
            weight.requires_grad or x.requires_grad):
        return _Depthwise.apply(x, weight, bias, tuple(stride), tuple(padding))
    return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

