"""The ResNet -> ConvNeXt builder, its flags, and converters to and from torchvision."""

from roadmap.models.config import (
    ConfigError,
    ModelConfig,
    convnext_config,
    resnet_config,
    scale_config,
)
from roadmap.models.convert import (
    convnext_from_torchvision,
    convnext_to_torchvision,
    from_torchvision,
    resnet_from_torchvision,
    resnet_to_torchvision,
    to_torchvision,
)
from roadmap.models.net import Block, LayerNorm2d, RoadmapNet, build_model, drop_path_rates

__all__ = [
    "Block", "ConfigError", "LayerNorm2d", "ModelConfig", "RoadmapNet", "build_model",
    "convnext_config", "convnext_from_torchvision", "convnext_to_torchvision",
    "drop_path_rates", "from_torchvision", "resnet_config", "resnet_from_torchvision",
    "resnet_to_torchvision", "scale_config", "to_torchvision",
]
