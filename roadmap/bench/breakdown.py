"""Where a training step's time goes, by kind of ATen operation: dense (matmuls and dense
convolutions), depthwise convolutions (forward; backward), norms, other, and the optimizer.

Each call is timed alone inside a ``TorchDispatchMode``, with its FLOPs and the least bytes it
must read and write, so that ``roadmap.bench.report`` can say what bounds the depthwise steps.
"""

from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from roadmap.runtime import sync

KINDS = ("dense", "depthwise", "depthwise_backward", "norm", "other", "optimizer")
DEPTHWISE_GRADS = {"depthwise_weight_grad", "depthwise_input_grad"}
NORM_OPS = {"native_batch_norm", "native_batch_norm_backward", "_native_batch_norm_legit",
            "_native_batch_norm_legit_no_training", "native_layer_norm",
            "native_layer_norm_backward"}


def _conv_groups(name: str, args: tuple) -> tuple[int, int]:
    """(groups, input channels) of a convolution or its backward."""
    if name == "convolution":
        return int(args[8]), args[0].shape[1]
    return int(args[9]), args[1].shape[1]  # convolution_backward(grad_out, input, weight, ...)


def _macs(name: str, args: tuple, out) -> int:
    """Multiply-accumulates of a matmul or convolution call (0 for anything else)."""
    if name in ("mm", "addmm", "bmm"):
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        return a.numel() * b.shape[-1]
    if name == "convolution":
        w = args[1]
        return out.numel() * w[0].numel()
    if name == "convolution_backward":
        grad_out, w, mask = args[0], args[2], args[10]
        return grad_out.numel() * w[0].numel() * (int(mask[0]) + int(mask[1]))
    if name == "depthwise_weight_grad":  # (x, grad, kh, kw, ...)
        return args[1].numel() * args[2] * args[3]
    if name == "depthwise_input_grad":  # (grad, weight, ...)
        return args[0].numel() * args[1][0].numel()
    return 0


def _bytes(args: tuple, out) -> int:
    """Bytes of every tensor read or written: the least traffic the call can cause."""
    total = 0
    for t in (*args, *(out if isinstance(out, (tuple, list)) else (out,))):
        if isinstance(t, (tuple, list)):
            total += sum(x.numel() * x.element_size() for x in t if isinstance(x, torch.Tensor))
        elif isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


class Breakdown(TorchDispatchMode):
    """Seconds, FLOPs and least bytes of every ATen call, by kind: dense (matmuls and dense
    convolutions), depthwise convolutions (forward; backward), norms, other (activations,
    residual adds, copies, pooling, loss) and the optimizer's update. Each call is timed alone
    (synchronised on GPUs), so the kinds' shares are a diagnosis, not a measure of the whole
    step's speed."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.in_optimizer = device, False
        self.totals = {k: {"seconds": 0.0, "flops": 0, "bytes": 0} for k in KINDS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        sync(self.device)
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        sync(self.device)
        seconds = time.perf_counter() - t0
        if self.in_optimizer:
            kind = "optimizer"
        elif name in ("convolution", "convolution_backward"):
            groups, channels = _conv_groups(name, args)
            depthwise = groups > 1 and groups == channels
            kind = ("dense" if not depthwise else
                    "depthwise" if name == "convolution" else "depthwise_backward")
        elif name in DEPTHWISE_GRADS:  # roadmap.models.depthwise's, on the CPU
            kind = "depthwise_backward"
        elif name in ("mm", "addmm", "bmm"):
            kind = "dense"
        elif name in NORM_OPS:
            kind = "norm"
        else:
            kind = "other"
        row = self.totals[kind]
        row["seconds"] += seconds
        row["flops"] += 2 * _macs(name, args, out)
        row["bytes"] += _bytes(args, out)
        return out


def breakdown(bench, device: torch.device, steps: int) -> dict:
    """Where ``steps`` training steps of a :class:`~roadmap.bench.timing.Bench` spend their
    time, by kind of operation."""
    mode = Breakdown(device)
    with mode:
        for _ in range(steps):
            mode.in_optimizer = False
            bench.forward_backward()
            mode.in_optimizer = True
            bench.optimizer_step()
    total = sum(v["seconds"] for v in mode.totals.values())
    return {k: {**v, "share": v["seconds"] / total} for k, v in mode.totals.items()}
