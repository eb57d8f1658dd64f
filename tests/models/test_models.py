"""The builder: exact equality with torchvision at both ends, the flags' effects, bad flags."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops import StochasticDepth

from roadmap.models import (
    Block,
    ConfigError,
    ModelConfig,
    RoadmapNet,
    convnext_config,
    convnext_from_torchvision,
    from_torchvision,
    resnet_config,
    resnet_from_torchvision,
    to_torchvision,
)
from roadmap.models.net import MATMUL_PIXELS, Pointwise, pointwise_kernels, stem_map


class OpNames(TorchDispatchMode):
    """The names of the ATen operations run inside."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial norm statistics and scales, so that a misplaced layer changes the output."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
        for name, p in m.named_parameters(recurse=False):
            if "layer_scale" in name:
                nn.init.uniform_(p, 0.5, 1.0)
    return model.eval()


CASES = [
    (torchvision.models.resnet50, 25_557_032, resnet_config()),
    (torchvision.models.convnext_tiny, 28_589_128, convnext_config()),
    (torchvision.models.convnext_base, 88_591_464,
     convnext_config(depths=(3, 3, 27, 3), width=128)),
]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "channels_last"])
@pytest.mark.parametrize("factory,params,cfg", CASES, ids=["resnet50", "convnext_t", "convnext_b"])
def test_equal_to_torchvision(factory, params, cfg, fmt):
    """At 96x96 channels-last, stage 1's 1x1 convs (24x24) run as oneDNN's, stage 3's (6x6) as
    matrix products (Pointwise)."""
    reference = randomize(factory()).to(memory_format=fmt)
    ours = RoadmapNet(cfg).eval().to(memory_format=fmt)
    assert sum(p.numel() for p in ours.parameters()) == params
    assert sum(p.numel() for p in reference.parameters()) == params
    convert = resnet_from_torchvision if cfg.stem == "resnet" else convnext_from_torchvision
    ours.load_state_dict(convert(reference.state_dict()))  # strict: same layers, same shapes
    x = torch.randn(2, 3, 96, 96).contiguous(memory_format=fmt)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("factory,params,cfg", CASES, ids=["resnet50", "convnext_t", "convnext_b"])
def test_to_torchvision_round_trip(factory, params, cfg):
    ours = randomize(RoadmapNet(cfg))
    theirs = to_torchvision(ours).eval()
    assert type(theirs) is type(factory())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-4, atol=1e-4)
    back = from_torchvision(theirs)
    assert back.cfg.depths == cfg.depths and back.cfg.width == cfg.width
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_from_torchvision_keeps_head_and_input_channels():
    reference = torchvision.models.convnext_tiny(num_classes=10)
    net = from_torchvision(reference)
    assert net.cfg.num_classes == 10
    single = RoadmapNet(resnet_config(in_chans=1, num_classes=7))
    assert to_torchvision(single).conv1.in_channels == 1


def test_conversion_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="bottleneck"):
        from_torchvision(torchvision.models.resnet18())
    with pytest.raises(ValueError, match="intermediate roadmap step"):
        to_torchvision(RoadmapNet(resnet_config(depths=(1, 1, 1, 1), depthwise=True)))
    with pytest.raises(TypeError, match="ResNet or ConvNeXt"):
        from_torchvision(torchvision.models.mobilenet_v3_small())


def test_bias_only_where_no_batchnorm_follows():
    resnet = RoadmapNet(resnet_config(depths=(1, 1, 1, 1)))
    assert all(m.bias is None for m in resnet.modules() if isinstance(m, nn.Conv2d))
    # one BatchNorm per block: only the conv before it loses its bias
    cfg = convnext_config(depths=(1, 1, 1, 1), norm="batch", downsample="block")
    block = RoadmapNet(cfg).stages[1].blocks[0]
    assert block.conv1.bias is None and block.conv2.bias is not None
    assert block.conv3.bias is not None and block.shortcut.conv.bias is None


def count(module: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("position", ["middle", "top"])
def test_block_norms_and_activations(position):
    def block(**flags):
        cfg = ModelConfig(depths=(1,), width=8, spatial_conv=position, depthwise=True, **flags)
        return Block(cfg, 32, 32, 8, stride=1, drop_path=0.0)

    resnet_like = block()
    assert count(resnet_like, nn.BatchNorm2d) == 3 and count(resnet_like, nn.ReLU) == 3
    lean = block(block_norms=1, block_activations=1)
    assert count(lean, nn.BatchNorm2d) == 1 and count(lean, nn.ReLU) == 1
    spatial = lean.conv1 if position == "top" else lean.conv2
    assert spatial.kernel_size == (3, 3) and spatial.groups == spatial.in_channels
    # the kept norm follows the spatial conv; the kept activation follows the first 1x1 conv
    norm_after = lean.norm1 if position == "top" else lean.norm2
    act_after = lean.act2 if position == "top" else lean.act1
    assert isinstance(norm_after, nn.BatchNorm2d) and isinstance(act_after, nn.ReLU)
    assert isinstance(lean.post_act, nn.Identity)


def test_inverted_bottleneck_widths():
    net = RoadmapNet(ModelConfig(depths=(1, 1), width=16, inverted_bottleneck=True))
    block = net.stages[0].blocks[0]
    assert (block.conv1.in_channels, block.conv1.out_channels) == (16, 64)
    assert block.conv3.out_channels == 16
    plain = RoadmapNet(ModelConfig(depths=(1, 1), width=16)).stages[0].blocks[0]
    assert (plain.conv1.out_channels, plain.conv3.out_channels) == (16, 64)


def test_separate_downsampling_layers():
    net = RoadmapNet(convnext_config(depths=(1, 1, 1)))
    ds = net.stages[1].downsample
    assert isinstance(ds.norm, nn.LayerNorm) and ds.conv.kernel_size == (2, 2)
    assert ds.conv.stride == (2, 2) and isinstance(net.stages[0].downsample, nn.Identity)
    assert isinstance(net.head.norm, nn.LayerNorm)
    assert all(isinstance(b.shortcut, nn.Identity) for s in net.stages for b in s.blocks)
    strided = RoadmapNet(convnext_config(depths=(1, 1, 1), downsample="block"))
    assert strided.stages[1].blocks[0].conv1.stride == (2, 2)
    assert isinstance(strided.head.norm, nn.Identity)


def test_layernorm2d_normalises_channels():
    net = RoadmapNet(convnext_config(depths=(1, 1)))
    x = torch.randn(2, 96, 5, 5)
    y = net.stem.norm(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 5, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 5, 5), atol=1e-3, rtol=0)


def test_stochastic_depth_rises_linearly():
    net = RoadmapNet(convnext_config(depths=(2, 2, 6, 2), drop_path_rate=0.3))
    rates = [m.p for m in net.modules() if isinstance(m, StochasticDepth)]
    expected = torch.linspace(0, 0.3, 12)[1:].tolist()  # the first block's rate is 0: no layer
    assert rates == pytest.approx(expected)


def test_layer_scale_and_init():
    net = RoadmapNet(convnext_config(depths=(1, 1), layer_scale_init=1e-6))
    gammas = [p for n, p in net.named_parameters() if n.endswith("layer_scale")]
    assert len(gammas) == 2 and all(torch.all(g == 1e-6) for g in gammas)
    assert not any("layer_scale" in n for n, _ in RoadmapNet(resnet_config()).named_parameters())
    block = net.stages[0].blocks[0]
    # std 0.02, cut at +-2 as in the official code (torch's and timm's absolute bounds)
    assert 0.018 < block.conv2.weight.std() < 0.022 and torch.all(block.conv2.bias == 0)
    kaiming = RoadmapNet(resnet_config()).stages[0].blocks[0].conv2.weight  # 3x3, 64 -> 64
    assert 0.055 < kaiming.std() < 0.063  # sqrt(2 / fan_out) = sqrt(2 / 576)


@pytest.mark.parametrize("flags,message", [
    (dict(kernel_size=4), "model.kernel_size=4 is invalid: must be odd"),
    (dict(kernel_size=0), "model.kernel_size=0 is invalid"),
    (dict(depths=(3, -1, 6, 3)), "model.depths="),
    (dict(depths=()), "model.depths="),
    (dict(norm="group"), "model.norm=group is invalid: valid values: batch, layer"),
    (dict(activation="swish"), "valid values: relu, gelu"),
    (dict(stem="conv"), "valid values: resnet, patchify"),
    (dict(spatial_conv="bottom"), "valid values: middle, top"),
    (dict(downsample="pool"), "valid values: block, separate"),
    (dict(block_norms=2), "model.block_norms=2 is invalid: valid values: 3, 1"),
    (dict(groups=3), "must divide the spatial conv's"),
    (dict(groups=2, depthwise=True), "must be 1 when model.depthwise=true"),
    (dict(width=0), "model.width=0 is invalid: must be an integer >= 1"),
    (dict(width=True), "model.width=true is invalid"),
    (dict(drop_path_rate=1.0), "must be a number in [0, 1)"),
    (dict(layer_scale_init=-1), "model.layer_scale_init=-1 is invalid"),
    (dict(depthwise="yes"), "must be true or false"),
    (dict(init="xavier"), "valid values: kaiming, trunc_normal"),
])
def test_invalid_flags_fail_before_building(flags, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**flags)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_flag_is_named():
    with pytest.raises(ConfigError, match="model.kernal_size is not a model flag"):
        ModelConfig.from_dict({"kernal_size": 3})


def test_grouped_conv_resnext():
    net = RoadmapNet(resnet_config(depths=(1, 1, 1, 1), groups=32, width=128))
    assert net.stages[0].blocks[0].conv2.groups == 32
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("how", ["setattr", "_modules"])
def test_a_swapped_layer_is_the_one_that_runs(how):
    """Layers replaced after construction, by attribute or through ``_modules`` (as
    ``torch.ao.quantization.convert`` does), run in the next forward; a placeholder replaced by
    a real layer runs too."""
    torch.manual_seed(0)
    net = RoadmapNet(convnext_config(depths=(1, 1), width=8, num_classes=3,
                                     layer_scale_init=0.0)).eval()
    block = net.stages[1].blocks[0]
    x = torch.randn(2, 3, 32, 32)
    before = net(x)

    zero = copy.deepcopy(block.conv3)
    nn.init.zeros_(zero.weight)
    nn.init.zeros_(zero.bias)

    class Double(nn.Module):
        def forward(self, t):
            return 2 * t

    assert isinstance(block.act1, nn.Identity)
    for name, layer in (("conv3", zero), ("act1", Double())):
        if how == "setattr":
            setattr(block, name, layer)
        else:
            block._modules[name] = layer
    seen = []
    block.act1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        after = net(x)
    assert seen, "the placeholder's replacement did not run"
    # conv3 -> zeros: the block adds nothing to its input, unlike before the swap
    with torch.no_grad():
        features = net.stages[1].downsample(net.stages[0](net.stem(x)))
        assert torch.equal(block(features), features)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("side", [8, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_a_pointwise_conv_is_a_1x1_conv_on_either_side_of_the_matmul_limit(side, bias):
    """A matrix product up to 8x8 (64 px) on the CPU, oneDNN's 1x1 conv over it: one function,
    its gradients included, channels-last out as in."""
    torch.manual_seed(0)
    layer = Pointwise(12, 20, bias)
    x = torch.randn(3, 12, side, side).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = torch.randn(3, 20, side, side)
    with OpNames() as ops:
        y = layer(x)
    assert (ops.names & {"convolution", "mm", "addmm"}) == (
        {"convolution"} if side * side > MATMUL_PIXELS else {"addmm" if bias else "mm"})
    assert y.is_contiguous(memory_format=torch.channels_last)
    params = (x, layer.weight) + ((layer.bias,) if bias else ())
    got = torch.autograd.grad(y, params, grad)
    want = torch.autograd.grad(F.conv2d(x, layer.weight, layer.bias), params, grad)
    torch.testing.assert_close(y, F.conv2d(x, layer.weight, layer.bias))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("cfg", [resnet_config(), convnext_config(),
                                 convnext_config(patch_size=2), convnext_config(patch_size=3)],
                         ids=["resnet", "patchify4", "patchify2", "patchify3"])
def test_the_stem_map_is_the_stems_output(cfg):
    stem = RoadmapNet(cfg).stem.eval()
    for size in (7, 8, 31, 32, 33, 36, 37, 64):
        with torch.no_grad():
            out = stem(torch.randn(1, 3, size, size))
        assert stem_map(cfg, size) == out.shape[-1] == out.shape[-2], size


def test_runs_record_where_1x1_convs_run_as_onednn_convs():
    """Only a CPU, channels-last run whose stage-1 map is over 8x8 computes its 1x1 convs
    otherwise than before MATMUL_PIXELS (a 32x32 input gives 8x8 maps in every step)."""
    for cfg in (resnet_config(), convnext_config()):
        assert pointwise_kernels(cfg, 32, True, True) is None
        assert pointwise_kernels(cfg, 36, True, True) == "onednn-over-64px"
        assert pointwise_kernels(cfg, 224, True, True) == "onednn-over-64px"
        assert pointwise_kernels(cfg, 224, False, True) is None  # a GPU: matmuls
        assert pointwise_kernels(cfg, 224, True, False) is None  # NCHW: convolutions, as before
