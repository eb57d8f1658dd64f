"""Depthwise convolutions on the CPU (roadmap/models/depthwise.py) compute what
``torch.nn.functional.conv2d`` computes: outputs and all three gradients within fp32 rounding,
over the ladder's shapes, kernel sizes 3-11, odd and even maps, strides 1 and 2, channels-last
and not, with and without a bias."""

import pytest
import torch
import torch.nn.functional as F

from roadmap.models import depthwise
from roadmap.models.depthwise import crop, depthwise_conv2d, kernels, native


def run(fn, x, w, b, grad):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    b = b.clone().requires_grad_() if b is not None else None
    y = fn(x, w, b)
    y.backward(grad)
    return y, x.grad, w.grad, None if b is None else b.grad


def close(got, want):
    scale = want.abs().max().clamp_min(1e-6)
    return ((got - want).abs().max() / scale).item() < 2e-6


SHAPES = [  # channels, map: the cpu ladder's stages (24-192 channels at 8/4/2/1 px) and more
    (24, 8), (48, 4), (96, 2), (192, 1), (16, 7), (8, 5), (40, 3), (12, 6), (32, 14)]


CASES = [(c, s, k, 1) for c, s in SHAPES for k in (3, 5, 7, 9, 11)] + [
    (c, s, 3, 2) for c, s in SHAPES]  # the ladder's strided depthwise convs are 3x3


@pytest.mark.parametrize("channels,size,k,stride", CASES)
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("bias", [True, False])
def test_the_same_function_and_gradients_as_conv2d(channels, size, k, stride, layout, bias):
    g = torch.Generator().manual_seed(channels * 100 + size * 10 + k)
    x = torch.randn(3, channels, size, size, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, 1, k, k, generator=g)
    b = torch.randn(channels, generator=g) if bias else None
    pad = k // 2
    out = (size + 2 * pad - k) // stride + 1
    grad = torch.randn(3, channels, out, out, generator=g)
    with native():
        want = run(lambda x, w, b: F.conv2d(x, w, b, stride, pad, 1, channels), x, w, b, grad)
    got = run(lambda x, w, b: depthwise_conv2d(x, w, b, (stride, stride), (pad, pad)),
              x, w, b, grad)
    for name, a, e in zip(("output", "input grad", "weight grad", "bias grad"), got, want,
                          strict=True):
        if e is not None:
            assert a.shape == e.shape and close(a, e), name


@pytest.mark.parametrize("channels,size,k,stride", [(96, 56, 7, 1), (40, 45, 3, 2)])
def test_the_weight_gradient_over_many_chunks_of_rows(channels, size, k, stride):
    """Maps large enough that each thread's rows span several of the kernel's cache-sized
    chunks (about 256 KB of rows each; 96 channels at 56 px: 6 rows), uneven ones included."""
    test_the_same_function_and_gradients_as_conv2d(channels, size, k, stride, "channels_last",
                                                   True)


@pytest.mark.parametrize("k,size,kept", [(7, 1, 1), (7, 2, 3), (7, 3, 5), (7, 4, 7), (11, 4, 7),
                                         (9, 8, 9), (3, 1, 1)])
def test_the_kernel_is_cropped_to_the_taps_that_reach_the_map(k, size, kept):
    w = torch.arange(k * k, dtype=torch.float32).reshape(1, 1, k, k)
    cropped, padding, _ = crop(w, (k // 2, k // 2), (size, size))
    assert cropped.shape[-2:] == (kept, kept) and padding == (kept // 2, kept // 2)
    centre = k // 2
    assert cropped[0, 0, kept // 2, kept // 2] == w[0, 0, centre, centre]


def test_the_compiled_kernel_builds_here_and_is_what_runs_use():
    assert kernels() == "roadmap-2"  # gcc and ninja come with make; a regression shows here


def test_without_the_compiled_kernel_it_is_pytorchs_own(monkeypatch):
    monkeypatch.setattr(depthwise, "_built", [None])
    assert kernels() == "native"
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, requires_grad=True)
    depthwise_conv2d(x, w, None, (1, 1), (1, 1)).sum().backward()
    assert x.grad is not None and w.grad is not None
