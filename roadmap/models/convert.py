"""Weights between this builder and torchvision's ResNet and ConvNeXt, both ways.

``from_torchvision(torchvision.models.resnet50(weights=...))`` gives a :class:`RoadmapNet` with
the same outputs, and ``to_torchvision(net)`` gives the torchvision model back. The state-dict
functions do the renaming alone, for checkpoints on disk. What converts is what both sides can
express: torchvision's bottleneck ResNets (50, 101, 152) and every ConvNeXt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from torch import nn

from roadmap.models.config import ModelConfig, convnext_config, resnet_config
from roadmap.models.net import RoadmapNet

StateDict = dict[str, torch.Tensor]
# (torchvision prefix, our prefix, torchvision holds it as a Linear where we hold a 1x1 conv)
Pair = tuple[str, str, bool]


def _count(sd: StateDict, pattern: str) -> list[int]:
    """Blocks per stage, from keys matching ``pattern`` (groups: stage, block)."""
    found: dict[int, int] = {}
    for key in sd:
        m = re.fullmatch(pattern, key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            found[stage] = max(found.get(stage, 0), block + 1)
    return [found[s] for s in sorted(found)]


def _resnet_pairs(depths: list[int]) -> Iterator[Pair]:
    yield "conv1", "stem.conv", False
    yield "bn1", "stem.norm", False
    for s, depth in enumerate(depths):
        for b in range(depth):
            tv, ours = f"layer{s + 1}.{b}", f"stages.{s}.blocks.{b}"
            for k in (1, 2, 3):
                yield f"{tv}.conv{k}", f"{ours}.conv{k}", False
                yield f"{tv}.bn{k}", f"{ours}.norm{k}", False
            yield f"{tv}.downsample.0", f"{ours}.shortcut.conv", False
            yield f"{tv}.downsample.1", f"{ours}.shortcut.norm", False
    yield "fc", "head.fc", False


def _convnext_pairs(depths: list[int]) -> Iterator[Pair]:
    yield "features.0.0", "stem.conv", False
    yield "features.0.1", "stem.norm", False
    for s, depth in enumerate(depths):
        if s > 0:
            yield f"features.{2 * s}.0", f"stages.{s}.downsample.norm", False
            yield f"features.{2 * s}.1", f"stages.{s}.downsample.conv", False
        for b in range(depth):
            tv, ours = f"features.{2 * s + 1}.{b}", f"stages.{s}.blocks.{b}"
            yield f"{tv}.block.0", f"{ours}.conv1", False
            yield f"{tv}.block.2", f"{ours}.norm1", False
            yield f"{tv}.block.3", f"{ours}.conv2", True
            yield f"{tv}.block.5", f"{ours}.conv3", True
            yield f"{tv}.layer_scale", f"{ours}.layer_scale", False
    yield "classifier.0", "head.norm", False
    yield "classifier.2", "head.fc", False


def _rename(sd: StateDict, pairs: Iterator[Pair], to_ours: bool, family: str) -> StateDict:
    table = {}
    for tv, ours, linear in pairs:
        src, dst = (tv, ours) if to_ours else (ours, tv)
        table[src] = (dst, linear)
    out: StateDict = {}
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        if key in table:  # a bare parameter such as layer_scale
            prefix, leaf = key, ""
        if prefix not in table:
            raise KeyError(f"{key!r} has no counterpart in torchvision's {family}; "
                           "only the family's own layers convert")
        dst, linear = table[prefix]
        if linear and leaf == "weight":
            value = value[:, :, None, None] if to_ours else value[:, :, 0, 0]
        out[f"{dst}.{leaf}" if leaf else dst] = value
    return out


_OUR_BLOCKS = r"stages\.(\d+)\.blocks\.(\d+)\.conv1\.weight"


def resnet_from_torchvision(sd: StateDict) -> StateDict:
    """torchvision ResNet state dict -> this builder's keys."""
    return _rename(sd, _resnet_pairs(_count(sd, r"layer(\d+)\.(\d+)\.conv1\.weight")), True,
                   "ResNet")


def resnet_to_torchvision(sd: StateDict) -> StateDict:
    """This builder's ResNet state dict -> torchvision's keys."""
    return _rename(sd, _resnet_pairs(_count(sd, _OUR_BLOCKS)), False, "ResNet")


def convnext_from_torchvision(sd: StateDict) -> StateDict:
    """torchvision ConvNeXt state dict -> this builder's keys."""
    depths = _count(sd, r"features\.(\d+)\.(\d+)\.block\.0\.weight")
    return _rename(sd, _convnext_pairs(depths), True, "ConvNeXt")


def convnext_to_torchvision(sd: StateDict) -> StateDict:
    """This builder's ConvNeXt state dict -> torchvision's keys."""
    return _rename(sd, _convnext_pairs(_count(sd, _OUR_BLOCKS)), False, "ConvNeXt")


def from_torchvision(model: nn.Module) -> RoadmapNet:
    """A :class:`RoadmapNet` with the weights and outputs of a torchvision ResNet or ConvNeXt."""
    import torchvision

    sd = model.state_dict()
    if isinstance(model, torchvision.models.ResNet):
        if not isinstance(model.layer1[0], torchvision.models.resnet.Bottleneck):
            raise ValueError("only bottleneck ResNets (50/101/152) convert: the roadmap's block "
                             "is a bottleneck; ResNet-18/34 use basic blocks")
        if model.layer1[0].conv2.groups != 1 or model.layer1[0].conv1.out_channels != 64:
            raise ValueError("only ResNets with groups=1 and width 64 convert "
                             "(not ResNeXt or wide ResNets)")
        depths = tuple(len(layer) for layer in (model.layer1, model.layer2, model.layer3,
                                                model.layer4))
        cfg = resnet_config(depths=depths, num_classes=model.fc.out_features,
                            in_chans=model.conv1.in_channels)
        sd = resnet_from_torchvision(sd)
    elif isinstance(model, torchvision.models.ConvNeXt):
        stem = model.features[0][0]
        depths = tuple(len(model.features[i]) for i in range(1, len(model.features), 2))
        cfg = convnext_config(depths=depths, width=stem.out_channels,
                              num_classes=model.classifier[2].out_features,
                              in_chans=stem.in_channels)
        sd = convnext_from_torchvision(sd)
    else:
        raise TypeError(f"from_torchvision takes a torchvision ResNet or ConvNeXt, "
                        f"not {type(model).__name__}")
    net = RoadmapNet(cfg)
    net.load_state_dict(sd)
    return net


def to_torchvision(net: RoadmapNet) -> nn.Module:
    """The torchvision ResNet or ConvNeXt equal to ``net`` (whose flags must be one of those)."""
    import torchvision

    cfg = net.cfg
    if _same_arch(cfg, resnet_config(depths=cfg.depths)) and len(cfg.depths) == 4:
        model = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, list(cfg.depths),
                                          num_classes=cfg.num_classes)
        if cfg.in_chans != 3:
            model.conv1 = nn.Conv2d(cfg.in_chans, 64, 7, 2, 3, bias=False)
        model.load_state_dict(resnet_to_torchvision(net.state_dict()))
        return model
    if _same_arch(cfg, convnext_config(depths=cfg.depths, width=cfg.width)):
        from torchvision.models.convnext import CNBlockConfig

        dims = cfg.stage_dims()
        settings = [CNBlockConfig(d, dims[i + 1] if i + 1 < len(dims) else None, n)
                    for i, (d, n) in enumerate(zip(dims, cfg.depths, strict=True))]
        model = torchvision.models.ConvNeXt(settings, stochastic_depth_prob=cfg.drop_path_rate,
                                            num_classes=cfg.num_classes)
        if cfg.in_chans != 3:
            model.features[0][0] = nn.Conv2d(cfg.in_chans, dims[0], 4, 4)
        model.load_state_dict(convnext_to_torchvision(net.state_dict()))
        return model
    raise ValueError("to_torchvision needs a ResNet (width 64) or a ConvNeXt: this network is an "
                     "intermediate roadmap step, which torchvision has no class for")


# flags that only change training or the head's size, not the layers' arrangement
_TRAINING_FLAGS = ("drop_path_rate", "layer_scale_init", "init", "num_classes", "in_chans")


def _same_arch(a: ModelConfig, b: ModelConfig) -> bool:
    same_flags = all(getattr(a, f) == getattr(b, f)
                     for f in a.__dataclass_fields__ if f not in _TRAINING_FLAGS)
    return same_flags and (a.layer_scale_init > 0) == (b.layer_scale_init > 0)
