"""Parameters and GFLOPs measured from a built module with ``torch.utils.flop_counter``.

GFLOPs follow the paper's convention: multiply-accumulates / 1e9 of one 224x224 image, as counted
by fvcore (which the paper used). ``torch.utils.flop_counter`` counts 2 FLOPs per
multiply-accumulate of convolutions and matrix products; fvcore counts 1, and in addition counts
some ops that the torch counter ignores (see :data:`FVCORE_EXTRA`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from roadmap.models.depthwise import native

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape)


def _norm_5(x_shape, *args, **kwargs) -> int:
    # fvcore: a normalisation with an affine transform costs 5 per input element
    return 5 * _numel(x_shape)


def _pool_1(x_shape, *args, **kwargs) -> int:
    # fvcore: adaptive average pooling costs 1 per input element
    return _numel(x_shape)


def _global_pool_1(x_shape, dim=None, *args, **kwargs) -> int:
    # nn.AdaptiveAvgPool2d(1) runs as a mean over H and W: count it as fvcore counts the pooling
    dims = {d % len(x_shape) for d in (dim or ())}
    return _numel(x_shape) if len(x_shape) == 4 and dims == {2, 3} else 0


# op -> fvcore's count in multiply-accumulates, from the op's input shape
FVCORE_EXTRA = {
    aten.native_layer_norm: _norm_5,
    aten._adaptive_avg_pool2d: _pool_1,
    aten.mean: _global_pool_1,
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, image_size: int = 224, in_chans: int = 3,
                 convention: str = "fvcore") -> float:
    """GFLOPs (multiply-accumulates / 1e9) of one image through ``model`` in eval mode.

    ``convention="macs"`` counts convolutions and matrix products only; ``"fvcore"`` (the
    paper's) adds fvcore's costs for LayerNorm and global average pooling. BatchNorm is not
    counted in either, as in the paper's table (it folds into the preceding conv at inference).
    """
    if convention not in ("macs", "fvcore"):
        raise ValueError(f"convention={convention!r} is invalid; valid values: macs, fvcore")
    mapping = {}
    if convention == "fvcore":
        mapping = {op: _doubled(f) for op, f in FVCORE_EXTRA.items()}
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device  # a model on "meta" is counted, not run
        x = torch.zeros(1, in_chans, image_size, image_size, device=device)
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        with counter, native():  # the full kernels, not the CPU's cropped ones
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def _doubled(count):
    # the counter reports 2 FLOPs per multiply-accumulate and count_gflops halves its total
    return lambda *args, **kwargs: 2 * count(*args, **kwargs)
