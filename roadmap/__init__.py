"""roadmap: the ConvNeXt paper's ResNet -> ConvNeXt modernization ladder, one flag per step."""

__version__ = "0.1.0"
