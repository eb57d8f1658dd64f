"""The builder's flags: one plain dataclass, validated before anything is built.

The defaults are torchvision's ResNet-50 (v1.5). Every step of the ConvNeXt roadmap changes one
to three of these fields (see ``conf/step/``). Nothing here knows about Hydra: a ``DictConfig``
is turned into this dataclass with :meth:`ModelConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roadmap.errors import shown

STEMS = ("resnet", "patchify")
SPATIAL_CONV_POSITIONS = ("middle", "top")
ACTIVATIONS = ("relu", "gelu")
NORMS = ("batch", "layer")
DOWNSAMPLINGS = ("block", "separate")
BLOCK_COUNTS = (3, 1)  # norms / activations per block: ResNet's three, ConvNeXt's one
INITS = ("kaiming", "trunc_normal")


class ConfigError(ValueError):
    """A model flag has an invalid value; the message names the flag and the valid values."""


@dataclass
class ModelConfig:
    """Flags of the ResNet -> ConvNeXt builder (defaults: torchvision ResNet-50 v1.5).

    Stage ``i`` has a base width ``width * 2**i``. A ResNet bottleneck block maps
    ``expansion * base -> base -> expansion * base``; an inverted bottleneck maps
    ``base -> expansion * base -> base``.
    """

    depths: tuple[int, ...] = (3, 4, 6, 3)
    """Blocks per stage; the number of stages is its length."""
    width: int = 64
    """Base width: channels of the stem and of stage 1's narrow layer, doubling per stage."""
    stem: str = "resnet"
    """``resnet``: 7x7/2 conv + norm + act + 3x3/2 max-pool; ``patchify``: p x p/p conv + norm."""
    patch_size: int = 4
    """Kernel and stride of the ``patchify`` stem."""
    groups: int = 1
    """Groups of the block's spatial (k x k) conv (ResNeXt-style grouped conv)."""
    depthwise: bool = False
    """Spatial conv is depthwise (groups = its channels); excludes ``groups`` > 1."""
    inverted_bottleneck: bool = False
    """Blocks are ``d -> expansion*d -> d``, not ResNet's ``expansion*d -> d -> expansion*d``."""
    expansion: int = 4
    """Ratio between the block's wide and narrow widths (4 in both ResNet and ConvNeXt)."""
    spatial_conv: str = "middle"
    """Position of the spatial conv: ``middle`` (ResNet) or ``top`` (moved up, ConvNeXt)."""
    kernel_size: int = 3
    """Kernel of the spatial conv."""
    activation: str = "relu"
    block_activations: int = 3
    """3: after the first two convs and after the residual add (ResNet); 1: only after the
    first pointwise conv, i.e. between the two 1x1 convs once the spatial conv is moved up."""
    block_norms: int = 3
    """3: after every conv (ResNet); 1: only after the spatial conv (ConvNeXt)."""
    norm: str = "batch"
    """``batch`` (BatchNorm) or ``layer`` (LayerNorm over channels, channels-first where needed)."""
    downsample: str = "block"
    """``block``: stride 2 in the first block of stages 2+ with a projection shortcut (ResNet);
    ``separate``: norm + 2x2/2 conv between stages and a norm after global pooling (ConvNeXt)."""
    layer_scale_init: float = 0.0
    """Initial value of the per-channel residual scale; 0 disables layer scale."""
    drop_path_rate: float = 0.0
    """Stochastic depth rate of the last block, rising linearly from 0 at the first."""
    num_classes: int = 1000
    in_chans: int = 3
    init: str = "kaiming"
    """``kaiming`` (torchvision ResNet) or ``trunc_normal`` (std 0.02, zero bias: ConvNeXt)."""

    def __post_init__(self) -> None:
        self.depths = tuple(self.depths)
        self.validate()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain mapping (e.g. ``OmegaConf.to_container(cfg.model)``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"model.{unknown[0]} is not a model flag; valid flags: {', '.join(sorted(names))}"
            )
        return cls(**dict(values))

    # -- derived widths -----------------------------------------------------------------
    def stage_dims(self) -> list[int]:
        """Input/output channels of each stage's blocks."""
        mult = 1 if self.inverted_bottleneck else self.expansion
        return [mult * self.width * 2**i for i in range(len(self.depths))]

    def stage_hidden(self) -> list[int]:
        """Channels inside each stage's blocks (the wide layer or the bottleneck)."""
        mult = self.expansion if self.inverted_bottleneck else 1
        return [mult * self.width * 2**i for i in range(len(self.depths))]

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        def bad(flag: str, reason: str) -> ConfigError:
            return ConfigError(f"model.{flag}={shown(getattr(self, flag))} is invalid: {reason}")

        def check_int(flag: str, minimum: int) -> None:
            value = getattr(self, flag)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise bad(flag, f"must be an integer >= {minimum}")

        def check_choice(flag: str, choices: tuple) -> None:
            value = getattr(self, flag)
            if isinstance(value, bool) or value not in choices:
                raise bad(flag, f"valid values: {', '.join(map(str, choices))}")

        def check_bool(flag: str) -> None:
            if not isinstance(getattr(self, flag), bool):
                raise bad(flag, "must be true or false")

        if not self.depths or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.depths
        ):
            raise bad("depths", "must be a non-empty list of integers >= 1, e.g. [3,4,6,3]")
        check_int("width", 1)
        check_choice("stem", STEMS)
        check_int("patch_size", 1)
        check_int("groups", 1)
        check_bool("depthwise")
        check_bool("inverted_bottleneck")
        check_int("expansion", 1)
        check_choice("spatial_conv", SPATIAL_CONV_POSITIONS)
        check_int("kernel_size", 1)
        if self.kernel_size % 2 == 0:
            raise bad("kernel_size", "must be odd (3, 5, 7, ...) so that padding keeps the size")
        check_choice("activation", ACTIVATIONS)
        check_choice("block_activations", BLOCK_COUNTS)
        check_choice("block_norms", BLOCK_COUNTS)
        check_choice("norm", NORMS)
        check_choice("downsample", DOWNSAMPLINGS)
        if isinstance(self.layer_scale_init, bool) or not isinstance(
            self.layer_scale_init, (int, float)
        ) or self.layer_scale_init < 0:
            raise bad("layer_scale_init", "must be a number >= 0 (0 disables layer scale)")
        if isinstance(self.drop_path_rate, bool) or not isinstance(
            self.drop_path_rate, (int, float)
        ) or not 0 <= self.drop_path_rate < 1:
            raise bad("drop_path_rate", "must be a number in [0, 1)")
        check_int("num_classes", 1)
        check_int("in_chans", 1)
        check_choice("init", INITS)
        if self.depthwise and self.groups != 1:
            raise bad("groups", "must be 1 when model.depthwise=true (depthwise sets the groups)")
        if self.groups > 1:
            for channels in self.spatial_conv_channels():
                if channels % self.groups:
                    raise bad(
                        "groups",
                        f"must divide the spatial conv's {channels} channels; "
                        f"valid values divide all of {sorted(set(self.spatial_conv_channels()))}",
                    )

    def spatial_conv_channels(self) -> list[int]:
        """Channels seen by every block's spatial conv (used to check ``groups``)."""
        if self.spatial_conv == "middle":
            return self.stage_hidden()
        dims = self.stage_dims()
        inputs = set(dims)
        if self.downsample == "block":
            inputs |= {self.width, *dims[:-1]}
        else:
            inputs.add(self.width)
        return sorted(inputs)


def resnet_config(depths: tuple[int, ...] = (3, 4, 6, 3), width: int = 64,
                  **flags: Any) -> ModelConfig:
    """A torchvision-style ResNet (bottleneck, v1.5): ResNet-50 by default."""
    return ModelConfig(depths=depths, width=width, **flags)


def convnext_config(depths: tuple[int, ...] = (3, 3, 9, 3), width: int = 96,
                    **flags: Any) -> ModelConfig:
    """ConvNeXt (ConvNeXt-T by default): every roadmap flag at its last step's value."""
    values = dict(
        depths=depths, width=width, stem="patchify", depthwise=True, inverted_bottleneck=True,
        spatial_conv="top", kernel_size=7, activation="gelu", block_activations=1,
        block_norms=1, norm="layer", downsample="separate", layer_scale_init=1e-6,
        init="trunc_normal",
    )
    values.update(flags)
    return ModelConfig(**values)


def scaled_values(values: Mapping[str, Any], width: float = 1.0,
                  depth: float = 1.0) -> dict[str, Any]:
    """Model flags (a mapping) with the base width and every stage's depth multiplied (rounded,
    at least 1): how a preset shrinks every step of a ladder alike."""
    if width <= 0 or depth <= 0:
        raise ConfigError(f"scale.width={width} / scale.depth={depth} are invalid: must be > 0")
    defaults = ModelConfig.__dataclass_fields__
    base_width = values.get("width", defaults["width"].default)
    depths = values.get("depths", defaults["depths"].default)
    return {**values, "width": max(1, round(base_width * width)),
            "depths": tuple(max(1, round(d * depth)) for d in depths)}
