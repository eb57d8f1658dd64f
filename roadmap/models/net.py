"""One network, stem -> stages -> head, and one block whose behaviour is set by flags.

With the default :class:`ModelConfig` the network is torchvision's ResNet-50 (v1.5); with the
flags of the roadmap's last step it is torchvision's ConvNeXt-T, parameter for parameter
(see :mod:`roadmap.models.convert`).

Block, in the order its layers run (``spatial_conv="top"`` shown; ``middle`` swaps conv1 and
conv2, as in ResNet)::

    x -> conv1 (k x k spatial, stride s) -> norm1? -> act1?
      -> conv2 (1x1, to the wide/narrow width) -> norm2? -> act2?
      -> conv3 (1x1, to the output width)       -> norm3?
      -> * layer_scale? -> stochastic depth -> + shortcut(x) -> post_act?

Missing parts are ``nn.Identity`` so that every flag combination has the same forward.
A conv has a bias unless a BatchNorm follows it directly (BatchNorm would cancel it): this gives
ResNet's bias-free convs and ConvNeXt's biased ones from one rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from roadmap.models.config import ModelConfig
from roadmap.models.depthwise import depthwise_conv2d


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _batch_norm(channels: int, ndim: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if ndim == 4 else nn.BatchNorm1d(channels)


def _layer_norm(channels: int, ndim: int) -> nn.Module:
    return LayerNorm2d(channels, eps=1e-6) if ndim == 4 else nn.LayerNorm(channels, eps=1e-6)


NORM_LAYERS = {"batch": _batch_norm, "layer": _layer_norm}


class GELU(nn.GELU):
    """``nn.GELU`` that runs on the contiguous NHWC view of a channels-last tensor: PyTorch's CPU
    GELU is about 2x slower on the permuted (NCHW-shaped) view of the same memory, which is what
    a channels-last network and :class:`Pointwise` hand it. Same values, same layout out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous():
            nhwc = x.permute(0, 2, 3, 1)
            if nhwc.is_contiguous():
                return super().forward(nhwc).permute(0, 3, 1, 2)
        return super().forward(x)


ACTIVATION_LAYERS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": GELU}


def make_norm(cfg: ModelConfig, channels: int, ndim: int = 4) -> nn.Module:
    return NORM_LAYERS[cfg.norm](channels, ndim)


def make_act(cfg: ModelConfig) -> nn.Module:
    return ACTIVATION_LAYERS[cfg.activation]()


def has_bias(cfg: ModelConfig, followed_by_norm: bool) -> bool:
    """A conv has a bias unless a BatchNorm, which would cancel it, follows it directly."""
    return not (followed_by_norm and cfg.norm == "batch")


class _GroupedConv(torch.autograd.Function):
    """A grouped convolution whose bias gradient is the sum of the output gradient, computed
    apart from the input and weight gradients: PyTorch's CPU (oneDNN) depthwise backward is
    slower when it also produces the bias gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x or need_w:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
                [need_x, need_w, False])
        if need_b:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


class GroupedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (parameters, output and gradients the same) for grouped and depthwise
    convolutions: depthwise ones through :func:`roadmap.models.depthwise.depthwise_conv2d` (on
    the CPU: kernels cropped to the map, a compiled weight gradient), grouped ones with a bias
    trained through :class:`_GroupedConv`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == self.in_channels == self.out_channels and self.dilation == (1, 1) \
                and isinstance(self.padding, tuple):
            return depthwise_conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if self.bias is None or not torch.is_grad_enabled():
            return super().forward(x)
        return _GroupedConv.apply(x, self.weight, self.bias, self.stride, self.padding,
                                  self.dilation, self.groups)


def conv(cfg: ModelConfig, cin: int, cout: int, kernel: int, stride: int = 1,
         groups: int = 1, padding: int | None = None, followed_by_norm: bool = True) -> nn.Conv2d:
    pad = kernel // 2 if padding is None else padding
    layer = GroupedConv2d if groups > 1 else nn.Conv2d
    return layer(cin, cout, kernel, stride=stride, padding=pad, groups=groups,
                 bias=has_bias(cfg, followed_by_norm))


MATMUL_PIXELS = 64
"""On the CPU, :class:`Pointwise` runs as a matrix product over maps of at most this many pixels
(8x8) and as oneDNN's 1x1 convolution over larger ones, where that is faster (docs/builder.md;
``make bench``'s 224x224 comparison with torchvision measures it)."""


class Pointwise(nn.Conv2d):
    """A 1x1 conv. On an input laid out channels-last (as a channels LayerNorm leaves it) it
    runs as one matrix product over channels, with no layout copy, as ConvNeXt's ``nn.Linear``
    does, except on the CPU over maps of more than :data:`MATMUL_PIXELS` pixels, where
    oneDNN's 1x1 convolution (channels-last in and out, no copy either) is the faster; otherwise
    as an ordinary convolution. The parameters are a 1x1 conv's either way."""

    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.permute(0, 2, 3, 1)
        if nhwc.is_contiguous() and matmul_map(x):
            return F.linear(nhwc, self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


def matmul_map(x: torch.Tensor) -> bool:
    """Whether :class:`Pointwise` computes ``x``, when NHWC in memory, as a matrix product: off
    the CPU, or over a map of at most :data:`MATMUL_PIXELS` pixels."""
    return x.device.type != "cpu" or x.shape[-2] * x.shape[-1] <= MATMUL_PIXELS


def stem_map(cfg: ModelConfig, image_size: int) -> int:
    """Side of the stem's output map (stage 1's, the largest any 1x1 conv sees) for square
    ``image_size`` inputs: ``resnet``'s 7x7/2 conv and 3x3/2 pool each halve it rounding up;
    ``patchify`` divides it by the patch size, rounding down."""
    if cfg.stem == "resnet":
        return math.ceil(math.ceil(image_size / 2) / 2)
    return image_size // cfg.patch_size


def pointwise_kernels(cfg: ModelConfig, image_size: int, on_cpu: bool,
                      channels_last: bool) -> str | None:
    """What a run records of how its 1x1 convs computed, where :data:`MATMUL_PIXELS` applies
    (a CPU run, channels-last, stage 1's map larger): they sum in another order than the matrix
    products used before it; None where nothing changed."""
    side = stem_map(cfg, image_size)
    if on_cpu and channels_last and side * side > MATMUL_PIXELS:
        return f"onednn-over-{MATMUL_PIXELS}px"
    return None


def drop_path_rates(depths: tuple[int, ...] | list[int], rate: float) -> list[float]:
    """Stochastic depth rate of every block, linear from 0 (first) to ``rate`` (last)."""
    total = sum(depths)
    return [rate * i / max(total - 1, 1) for i in range(total)]


def stochastic_depth(rate: float) -> nn.Module:
    """torchvision's per-sample stochastic depth, or nothing. torchvision is imported only when
    a block has some: importing it slows every process start that does not need it."""
    if rate <= 0:
        return nn.Identity()
    from torchvision.ops import StochasticDepth

    return StochasticDepth(rate, "row")


class Block(nn.Module):
    """One residual block; see the module docstring for its layer order."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int, hidden: int, stride: int,
                 drop_path: float) -> None:
        super().__init__()
        top = cfg.spatial_conv == "top"
        # channels before/after each of the three convs, and which one is spatial
        spatial_idx = 0 if top else 1
        widths = [cin, cin, hidden, cout] if top else [cin, hidden, hidden, cout]
        # the one kept norm follows the spatial conv; the one kept activation the first 1x1 conv
        norm_at = {0, 1, 2} if cfg.block_norms == 3 else {spatial_idx}
        act_at = {0, 1} if cfg.block_activations == 3 else {1 if top else 0}
        for i in range(3):
            cin_i, cout_i = widths[i], widths[i + 1]
            if i == spatial_idx:
                groups = cin_i if cfg.depthwise else cfg.groups
                layer = conv(cfg, cin_i, cout_i, cfg.kernel_size, stride, groups,
                             followed_by_norm=i in norm_at)
            else:
                layer = Pointwise(cin_i, cout_i, has_bias(cfg, i in norm_at))
            setattr(self, f"conv{i + 1}", layer)
            setattr(self, f"norm{i + 1}", make_norm(cfg, cout_i) if i in norm_at else nn.Identity())
            setattr(self, f"act{i + 1}", make_act(cfg) if i in act_at else nn.Identity())
        if cfg.layer_scale_init > 0:
            self.layer_scale = nn.Parameter(torch.full((cout, 1, 1), float(cfg.layer_scale_init)))
        else:
            self.layer_scale = None
        self.drop_path = stochastic_depth(drop_path)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", conv(cfg, cin, cout, 1, stride))
            self.shortcut.add_module("norm", make_norm(cfg, cout))
        else:
            self.shortcut = nn.Identity()
        self.post_act = make_act(cfg) if cfg.block_activations == 3 else nn.Identity()

    _LAYERS = ("conv1", "norm1", "act1", "conv2", "norm2", "act2", "conv3", "norm3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ``nn.Identity`` placeholders are skipped: a module call costs microseconds, which a
        # block of small tensors (32x32 images, the last stages) notices against torchvision's
        # blocks, which have none. The layers are looked up on every call, so a layer swapped
        # in later (``setattr`` or ``_modules[name] = ...``, as quantization does) is used.
        layers = self._modules
        out = x
        for name in self._LAYERS:
            layer = layers[name]
            if type(layer) is not nn.Identity:
                out = layer(out)
        if self.layer_scale is not None:
            out = out * self.layer_scale
        drop_path, shortcut, post_act = layers["drop_path"], layers["shortcut"], layers["post_act"]
        if type(drop_path) is not nn.Identity:
            out = drop_path(out)
        shortcut = x if type(shortcut) is nn.Identity else shortcut(x)
        # in place, as torchvision's blocks do: ``out`` keeps its memory layout. An out-of-place
        # add picks NCHW strides when H = W = 1 (ConvNeXt's last stage on 32x32 images), and the
        # next depthwise conv then takes oneDNN's far slower NCHW path.
        out += shortcut
        return out if type(post_act) is nn.Identity else post_act(out)


class Stage(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int, cin: int, drop_paths: list[float]) -> None:
        super().__init__()
        cout, hidden = cfg.stage_dims()[index], cfg.stage_hidden()[index]
        stride = 1
        if index == 0 or cfg.downsample == "block":
            self.downsample = nn.Identity()
            stride = 1 if index == 0 else 2
        else:
            self.downsample = nn.Sequential()
            self.downsample.add_module("norm", make_norm(cfg, cin))
            self.downsample.add_module(
                "conv", conv(cfg, cin, cout, 2, stride=2, padding=0, followed_by_norm=False))
            cin = cout
        blocks = []
        for j, rate in enumerate(drop_paths):
            blocks.append(Block(cfg, cin, cout, hidden, stride if j == 0 else 1, rate))
            cin = cout
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Stem(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.stem == "resnet":
            self.conv = conv(cfg, cfg.in_chans, cfg.width, 7, stride=2)
            self.norm = make_norm(cfg, cfg.width)
            self.act = make_act(cfg)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            p = cfg.patch_size
            self.conv = conv(cfg, cfg.in_chans, cfg.width, p, stride=p, padding=0)
            self.norm = make_norm(cfg, cfg.width)
            self.act = nn.Identity()
            self.pool = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class Head(nn.Module):
    def __init__(self, cfg: ModelConfig, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        separate = cfg.downsample == "separate"
        self.norm = make_norm(cfg, channels, ndim=2) if separate else nn.Identity()
        self.fc = nn.Linear(channels, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(torch.flatten(self.pool(x), 1)))


class RoadmapNet(nn.Module):
    """Stem -> stages -> head, configured by a :class:`ModelConfig`."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = ModelConfig() if cfg is None else cfg  # validated when it was made
        self.cfg = cfg
        self.stem = Stem(cfg)
        rates = drop_path_rates(cfg.depths, cfg.drop_path_rate)
        stages, cin, start = [], cfg.width, 0
        for i, depth in enumerate(cfg.depths):
            stages.append(Stage(cfg, i, cin, rates[start:start + depth]))
            cin, start = cfg.stage_dims()[i], start + depth
        self.stages = nn.Sequential(*stages)
        self.head = Head(cfg, cin)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc = self.cfg.init == "trunc_normal"
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if trunc:
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                else:
                    m.reset_parameters()  # torchvision leaves ResNet's fc at PyTorch's default
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_model(cfg: ModelConfig | None = None, **overrides) -> RoadmapNet:
    """Build a network from a :class:`ModelConfig` and/or keyword flags."""
    if cfg is None:
        cfg = ModelConfig(**overrides)
    elif overrides:
        import dataclasses

        cfg = dataclasses.replace(cfg, **overrides)
    return RoadmapNet(cfg)
