"""The ResNet -> ConvNeXt builder, its flags, converters to and from torchvision, and the
parameter and FLOP counts measured from a built module. Nothing here imports Hydra."""

from roadmap.models.config import (
    ConfigError,
    ModelConfig,
    convnext_config,
    resnet_config,
    scaled_values,
)
from roadmap.models.convert import (
    convnext_from_torchvision,
    convnext_to_torchvision,
    from_torchvision,
    resnet_from_torchvision,
    resnet_to_torchvision,
    to_torchvision,
)
from roadmap.models.flops import count_gflops, count_params
from roadmap.models.net import Block, LayerNorm2d, RoadmapNet, build_model, drop_path_rates

__all__ = [
    "Block", "ConfigError", "LayerNorm2d", "ModelConfig", "RoadmapNet", "build_model",
    "convnext_config", "convnext_from_torchvision", "convnext_to_torchvision", "count_gflops",
    "count_params", "drop_path_rates", "from_torchvision", "resnet_config",
    "resnet_from_torchvision", "resnet_to_torchvision", "scaled_values",
    "to_torchvision",
]
