"""The schema of the whole config: one typed dataclass per node, checked once.

Registered in Hydra's ConfigStore by :func:`roadmap.conf.register_configs`, so OmegaConf checks
every value's type when the config is composed, and ``+key=value`` or a misspelt key fails
there. Ranges and choices are checked where each dataclass is made (``__post_init__``, run by
:func:`roadmap.conf.settings`): the first bad value is a :class:`~roadmap.errors.RunError` of one
line naming the key and what is valid. Code below the entry points receives these objects.

The data node is the one node whose keys depend on its value: each ``conf/data/*.yaml`` extends
one of :data:`DATA_SCHEMAS` (in-memory archives, the synthetic set, image folders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from roadmap.errors import RunError, shown
from roadmap.models import ModelConfig, scaled_values

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTO_OR_BOOL = ("auto", True, False)
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
CROPS = ("pad", "resized", "none")
ERASING_MODES = ("pixel", "rand", "const")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Checked:
    """A config node that checks its values when made; ``PREFIX`` is its place in the config."""

    PREFIX: ClassVar[str] = ""

    def _bad(self, key: str, rule: str, sep: str = ":") -> RunError:
        value = getattr(self, key)
        return RunError(f"{self.PREFIX}{key}={shown(value)} is invalid{sep} {rule}")

    def integer(self, key: str, least: int | None = None, null: bool = False) -> None:
        value = getattr(self, key)
        if value is None and null:
            return
        if not _is_int(value) or (least is not None and value < least):
            rule = "must be an integer" + (f" >= {least}" if least is not None else "")
            raise self._bad(key, rule + (", or null" if null else ""))

    def number(self, key: str, low: float, high: float | None = None, *, open_low: bool = False,
               open_high: bool = True, null: str | None = None) -> None:
        """A finite number in [low, high) (``open_low``: low excluded; ``open_high`` False:
        high included); ``null``: what null means, when it is allowed."""
        value = getattr(self, key)
        if value is None and null is not None:
            return
        ok = is_number(value) and (value > low if open_low else value >= low) and (
            high is None or (value < high if open_high else value <= high))
        if not ok:
            if high is None:
                rule = f"must be a number {'>' if open_low else '>='} {shown(low)}"
            else:
                rule = (f"must be a number in {'(' if open_low else '['}{shown(low)}, "
                        f"{shown(high)}{')' if open_high else ']'}")
            raise self._bad(key, rule + (f", or null {null}" if null else ""))

    def choice(self, key: str, choices: tuple) -> None:
        value = getattr(self, key)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise self._bad(key, "valid values: " + ", ".join(shown(c) for c in choices), ";")


@dataclass
class ScaleConfig(Checked):
    """Applied to every step alike: width and depths multiplied, rounded, at least 1."""

    PREFIX: ClassVar[str] = "scale."
    width: float = 1.0
    depth: float = 1.0

    def __post_init__(self) -> None:
        self.number("width", 0, open_low=True)
        self.number("depth", 0, open_low=True)


@dataclass
class LadderConfig(Checked):
    """The numbers that differ between the paper's two ladders (``conf/ladder/``)."""

    PREFIX: ClassVar[str] = "ladder."
    name: str = MISSING
    resnet_depths: list[int] = MISSING
    stage_ratio_depths: list[int] = MISSING
    stage_ratio_width: int = MISSING
    convnext_width: int = MISSING
    drop_path_rate: float = MISSING


@dataclass
class ProtocolConfig(Checked):
    """Short-run choices (``conf/protocol/``, experiments/protocol.md)."""

    PREFIX: ClassVar[str] = "protocol."
    name: str = MISSING
    padding: int | None = None
    step0_schedule: str = "step"
    regularisers: bool = True

    def __post_init__(self) -> None:
        self.choice("step0_schedule", SCHEDULES)


@dataclass
class RecipeConfig(Checked):
    """A training recipe (``conf/recipe/``): optimizer, schedule, augmentation, loss."""

    PREFIX: ClassVar[str] = "recipe."
    name: str = MISSING
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_batch: int = 256
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    wd_exclude_1d: bool = False
    epochs: int = 90
    schedule: str = "step"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0
    min_lr: float = 0.0
    hflip: bool = True
    interpolation: str = "bilinear"
    color_jitter: float | None = None
    randaugment: bool = False
    randaugment_ops: int = 2
    randaugment_magnitude: float = 9
    randaugment_magnitude_std: float = 0.0
    randaugment_increasing: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    random_erasing: float = 0.0
    erasing_mode: str = "pixel"
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    ema: bool = False
    ema_decay: float = 0.9999

    def __post_init__(self) -> None:
        self.choice("optimizer", OPTIMIZERS)
        self.choice("schedule", SCHEDULES)
        self.choice("erasing_mode", ERASING_MODES)
        self.choice("interpolation", INTERPOLATIONS)
        self.number("lr", 0, open_low=True)
        self.integer("lr_batch", 1)
        self.integer("epochs", 1)
        self.integer("randaugment_ops", 0)
        self.number("momentum", 0, 1)
        self.number("eps", 0, open_low=True)
        self.number("weight_decay", 0)
        self.number("gamma", 0, 1, open_low=True, open_high=False)
        self.number("warmup_epochs", 0)
        self.number("min_lr", 0)
        self.number("color_jitter", 0, null="for none")
        self.number("randaugment_magnitude", 0, 10, open_high=False)
        self.number("randaugment_magnitude_std", 0)
        for key in ("mixup_alpha", "cutmix_alpha"):
            self.number(key, 0)
        for key in ("mix_prob", "mix_switch_prob", "random_erasing"):
            self.number(key, 0, 1, open_high=False)
        self.number("label_smoothing", 0, 1)
        self.number("grad_clip", 0, open_low=True, null="for none")
        self.number("ema_decay", 0, 1)
        if len(self.betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in self.betas):
            raise self._bad("betas", "must be two numbers in [0, 1)")
        if not all(_is_int(m) and m >= 0 for m in self.milestones):
            raise self._bad("milestones", "must be a list of epochs (integers >= 0)")


@dataclass
class DataConfig(Checked):
    """What every data set has: its name, classes, channels, size, normalisation, crop, the
    validation split and the training subset."""

    PREFIX: ClassVar[str] = "data."
    name: str = MISSING
    num_classes: int = MISSING
    in_chans: int = MISSING
    image_size: int = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    crop: str = "pad"
    val_size: int = 0
    """Held out of train, stratified; every choice is made on it (0: none)."""
    val_seed: int = 0
    train_images: int | None = None
    """A fixed, stratified subset of the rest of train to train on (None: all)."""

    IN_MEMORY: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.choice("name", DATASETS)
        self.choice("crop", CROPS)
        for key in ("num_classes", "in_chans", "image_size"):
            self.integer(key, 1)
        self.integer("val_size", 0)
        self.integer("val_seed")
        self.integer("train_images", 1, null=True)
        for key in ("mean", "std"):
            if len(getattr(self, key)) != self.in_chans:
                raise self._bad(key, f"must have one value per channel ({self.in_chans})")
        if not all(is_number(s) and s > 0 for s in self.std):
            raise self._bad("std", "every value must be a number > 0")

    def below_image_size(self, key: str) -> None:
        """An integer in [0, image_size): a crop's padding."""
        value = getattr(self, key)
        if not _is_int(value) or not 0 <= value < self.image_size:
            raise self._bad(key, f"must be an integer in [0, {self.image_size}) (below "
                                 "data.image_size)")


@dataclass
class ArchiveDataConfig(DataConfig):
    """An in-memory data set read from its archive (Fashion-MNIST, CIFAR)."""

    root: str = MISSING
    download: bool = True
    padding: int = 4
    resize: float = 1.0
    """The images scaled by this factor (bilinear) as they are loaded, before padding to
    ``image_size`` (1: as stored)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.below_image_size("padding")
        self.number("resize", 0, 8, open_low=True, open_high=False)


@dataclass
class SyntheticDataConfig(DataConfig):
    """The generated set of tests and smoke runs."""

    train_size: int = 1000
    test_size: int = 500
    noise: float = 0.35
    padding: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self.integer("train_size", 1)
        self.integer("test_size", 1)
        self.number("noise", 0)
        self.below_image_size("padding")


@dataclass
class FolderDataConfig(DataConfig):
    """An ImageNet-style folder, decoded and augmented image by image."""

    IN_MEMORY: ClassVar[bool] = False
    root: str | None = None
    train_dir: str = "train"
    val_dir: str = "val"
    test_crop_ratio: float = 0.875
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    check_images: bool = True
    crop: str = "resized"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.number("test_crop_ratio", 0, 1, open_low=True, open_high=False)
        if len(self.scale) != 2 or not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise self._bad("scale", "must be [low, high] with 0 < low <= high <= 1")


DATA_SCHEMAS = {"schema_archive": ArchiveDataConfig, "schema_synthetic": SyntheticDataConfig,
                "schema_folder": FolderDataConfig}
"""The data schemas by the name ``conf/data/*.yaml`` extend them by."""


@dataclass
class LoggerConfig(Checked):
    """Experiment tracking (``conf/logger/``): Weights & Biases, or nothing."""

    PREFIX: ClassVar[str] = "logger."
    name: str = "none"
    mode: str = "offline"
    init_timeout: float = 30
    project: str = "roadmap"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.choice("name", LOGGERS)
        self.choice("mode", WANDB_MODES)
        self.number("init_timeout", 0, open_low=True)


@dataclass
class TrainConfig(Checked):
    """A run: which step of which ladder, trained how (``conf/config.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    data: Any = MISSING
    """One of the :data:`DATA_SCHEMAS`."""
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    step_name: str = MISSING
    preset_name: str = MISSING
    seed: int = 0
    epochs: int = MISSING
    batch_size: int = 128
    accum_steps: int = 1
    total_batch: int | None = None
    lr: float | None = None
    eval_batch_size: int = 256
    device: str = "auto"
    precision: str = "auto"
    channels_last: Any = "auto"
    compile: bool = False
    workers: int = 4
    augment_batches: int = 4
    progress: Any = "auto"
    checkpoint_every: int = 1
    threads: int | None = None

    def __post_init__(self) -> None:
        self.integer("seed")
        for key in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every",
                    "accum_steps", "augment_batches"):
            self.integer(key, 1)
        self.integer("workers", 0)
        self.integer("total_batch", 1, null=True)
        self.integer("threads", 1, null=True)
        self.number("lr", 0, open_low=True, null="for the recipe's rule")
        self.choice("device", DEVICES)
        self.choice("precision", PRECISIONS)
        self.choice("channels_last", AUTO_OR_BOOL)
        self.choice("progress", AUTO_OR_BOOL)
        if self.recipe.randaugment and not self.recipe.randaugment_increasing and \
                self.data.IN_MEMORY:
            raise RunError("recipe.randaugment_increasing=false is not available for in-memory "
                           "data sets (the batched RandAugment has timm's increasing ops, the "
                           "paper's inc1)")

    def network(self) -> ModelConfig:
        """The network a run trains: the model flags with the preset's ``scale`` applied."""
        values = {f: getattr(self.model, f) for f in ModelConfig.__dataclass_fields__}
        return ModelConfig.from_dict(scaled_values(values, self.scale.width, self.scale.depth))
