"""The builder adds no work to the networks it reproduces: the same ATen operations as
torchvision's ResNet-50 and ConvNeXt-T, forward and backward, and the same memory layouts into
every spatial convolution. Speed itself is measured by ``make bench``, not here; these checks
are what makes its ours / torchvision ratio hold on any machine, and they fail on the mistakes
that cost speed (an extra copy, an extra elementwise op, a layout that sends a depthwise conv
down a slow path)."""

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from roadmap.models import RoadmapNet, convnext_config, resnet_config, to_torchvision
from roadmap.models.depthwise import native
from roadmap.models.net import MATMUL_PIXELS, GroupedConv2d, Pointwise

# operations that only make a new view of the same memory: free of arithmetic and copies
VIEWS = {"view", "_unsafe_view", "permute", "t", "transpose", "as_strided", "expand", "squeeze",
         "unsqueeze", "alias", "detach", "flatten", "reshape"}


class Recorder(TorchDispatchMode):
    """Every ATen call, with the strides of its first argument."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func.overloadpacket.__name__, args))
        return func(*args, **(kwargs or {}))


def record(model: torch.nn.Module, fmt: torch.memory_format, size: int = 32) -> Recorder:
    """The ATen calls of a training step, with PyTorch's own depthwise kernels (the CPU's
    cropped ones with their compiled weight gradient replace work, on purpose: tests/models/
    test_depthwise.py checks them against these, ``make bench`` times them)."""
    torch.manual_seed(0)
    model = model.to(memory_format=fmt).train()
    x = torch.randn(2, 3, size, size).contiguous(memory_format=fmt)
    with native(), Recorder() as rec:
        model(x).sum().backward()
    return rec


CONFIGS = [resnet_config(num_classes=10), convnext_config(num_classes=10, drop_path_rate=0.0)]
FORMATS = [torch.contiguous_format, torch.channels_last]


def as_matmuls(model: torch.nn.Module, fmt: torch.memory_format, size: int) -> tuple[int, int]:
    """How many of the model's 1x1 conv calls should run as matrix products (all, biased): on
    the CPU, those whose input is NHWC in memory, over maps of at most MATMUL_PIXELS pixels."""
    calls = []

    def seen(module, inputs, output):
        x = inputs[0]
        # NHWC in memory (on a 1x1 map NCHW is too), over no more than MATMUL_PIXELS
        if x.permute(0, 2, 3, 1).is_contiguous() and x.shape[-2] * x.shape[-1] <= MATMUL_PIXELS:
            calls.append(module.bias is not None)

    hooks = [m.register_forward_hook(seen) for m in model.modules() if isinstance(m, Pointwise)]
    record(model, fmt, size)
    for h in hooks:
        h.remove()
    return len(calls), sum(calls)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["resnet50", "convnext_t"])
def test_same_operations_as_torchvision(cfg, fmt, size):
    ours = RoadmapNet(cfg)
    theirs = to_torchvision(ours)
    got = Counter(name for name, _ in record(ours, fmt, size).calls)
    want = Counter(name for name, _ in record(theirs, fmt, size).calls)
    differ = {op for op in got.keys() | want.keys() if got[op] != want[op]} - VIEWS
    # a 1x1 conv runs as a matrix product where Pointwise says (forward, grad of input, grad of
    # weight: three matmuls, and a sum for a bias) and as a conv elsewhere; torchvision's
    # ResNet-50 runs convs, its ConvNeXt-T matrix products (nn.Linear); a biased grouped conv
    # (GroupedConv2d, not depthwise) takes its bias gradient as a sum; nothing else differs
    assert differ <= {"convolution", "convolution_backward", "mm", "addmm", "sum"}, {
        op: (got[op], want[op]) for op in differ}
    matmuls, biased = as_matmuls(ours, fmt, size)
    linear = sum(isinstance(m, torch.nn.Linear) for m in theirs.modules()) - 1  # not the head's
    assert want["convolution"] - got["convolution"] == matmuls - linear
    assert want["convolution_backward"] - got["convolution_backward"] == matmuls - linear
    assert got["mm"] + got["addmm"] - want["mm"] - want["addmm"] == 3 * (matmuls - linear)
    biased_grouped = sum(isinstance(m, GroupedConv2d) and m.bias is not None
                         and m.groups != m.in_channels for m in ours.modules())
    assert got["sum"] - want["sum"] == biased_grouped + biased - linear


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["resnet50", "convnext_t"])
def test_spatial_convs_see_torchvision_layouts(cfg, fmt, size):
    """At 32x32 ConvNeXt's last stage is 1x1, where strides are ambiguous: an out-of-place
    residual add once gave its depthwise convs NCHW strides and a far slower kernel."""

    def spatial_inputs(rec: Recorder) -> list[tuple]:
        return [(tuple(args[0].shape), args[0].stride(), tuple(args[1].shape))
                for name, args in rec.calls
                if name == "convolution" and args[1].shape[-1] > 1]

    ours = RoadmapNet(cfg)
    theirs = to_torchvision(ours)
    got, want = spatial_inputs(record(ours, fmt, size)), spatial_inputs(record(theirs, fmt, size))
    assert len(got) == len(want) > 0
    assert got == want


def test_replaced_layer_is_used():
    """Blocks skip their nn.Identity placeholders; a layer set after construction still runs."""
    model = RoadmapNet(convnext_config(num_classes=10, depths=(1, 1, 1, 1), width=8,
                                       layer_scale_init=0.0)).eval()
    block = model.stages[0].blocks[0]
    x = torch.randn(1, 8, 4, 4)
    before = block(x)
    block.norm2 = torch.nn.LayerNorm([32, 4, 4])  # replaces an Identity after the first call
    assert not torch.allclose(block(x), before)


@pytest.mark.parametrize("groups", [8, 2])
def test_grouped_conv_gradients_match_conv2d(groups):
    torch.manual_seed(0)
    ours = GroupedConv2d(8, 8, 3, padding=1, groups=groups).double()
    ref = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 5, 5, dtype=torch.double, requires_grad=True)
    grad = torch.randn(2, 8, 5, 5, dtype=torch.double)
    got = torch.autograd.grad(ours(x), (x, ours.weight, ours.bias), grad)
    want = torch.autograd.grad(ref(x), (x, ref.weight, ref.bias), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradgradcheck(ours, (x,))
