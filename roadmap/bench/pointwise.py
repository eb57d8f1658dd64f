"""Which way computes a 1x1 conv faster on this machine: a matrix product over the NHWC view
(what :class:`roadmap.models.net.Pointwise` runs on maps of at most ``MATMUL_PIXELS`` pixels on
the CPU, and on every map on a GPU) or the backend's convolution (oneDNN on the CPU). Forward and
backward of every distinct 1x1 conv of a full-size network at the benchmark's resolution and
batch, channels-last, the two ways alternating; the ratio is matmul's time over the conv's
(> 1: the conv is faster) with its 95% interval."""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from roadmap.models.net import Pointwise, matmul_map
from roadmap.results.stats import ratio_interval
from roadmap.runtime import timed


def pointwise_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int, int, int, bool]]:
    """(in channels, out channels, height, width, bias) of every distinct 1x1 conv call of one
    forward of ``x``, in the order they first run."""
    seen: dict[tuple, None] = {}

    def hook(module, inputs, output):
        h, w = inputs[0].shape[-2:]
        seen[(module.in_channels, module.out_channels, h, w, module.bias is not None)] = None

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, Pointwise)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return list(seen)


def _routes(shape: tuple, batch: int, device: torch.device) -> tuple:
    """The two ways, forward + backward, of one 1x1 conv on channels-last input."""
    cin, cout, h, w, bias = shape
    fmt = torch.channels_last
    x = torch.randn(batch, cin, h, w, device=device).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    weight = torch.randn(cout, cin, 1, 1, device=device, requires_grad=True)
    b = torch.randn(cout, device=device, requires_grad=True) if bias else None
    grad = torch.randn(batch, cout, h, w, device=device).contiguous(memory_format=fmt)

    def matmul() -> None:
        out = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), b).permute(0, 3, 1, 2)
        out.backward(grad)

    def conv() -> None:
        F.conv2d(x, weight, b).backward(grad)

    return matmul, conv, x


def pointwise_rows(models: dict[str, nn.Module], x: torch.Tensor, pairs: int) -> list[dict]:
    """One row per distinct 1x1 conv of each model: ms of each way, their ratio and interval,
    and the way ``Pointwise`` takes on this device."""
    rows = []
    for name, model in models.items():
        model = model.to(x.device, memory_format=torch.channels_last)
        for shape in pointwise_shapes(model, x.contiguous(memory_format=torch.channels_last)):
            matmul, conv, sample = _routes(shape, x.shape[0], x.device)
            for fn in (matmul, conv):  # warm-up
                fn()
            t_mm, t_conv = [], []
            for i in range(pairs):
                for fn, times in ((matmul, t_mm), (conv, t_conv))[::1 if i % 2 else -1]:
                    times.append(timed(fn, 1, x.device))
            ratio, low, high = ratio_interval(t_conv, t_mm)
            cin, cout, h, w, bias = shape
            rows.append({"model": name, "cin": cin, "cout": cout, "map": f"{h}x{w}",
                         "bias": bias, "ms_matmul": 1e3 * statistics.median(t_mm),
                         "ms_conv": 1e3 * statistics.median(t_conv), "ratio": ratio,
                         "ratio_low": low, "ratio_high": high,
                         "runs_as": "matmul" if matmul_map(sample) else "conv"})
    return rows
