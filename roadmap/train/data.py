"""Data sets: small ones as uint8 tensors in memory, image folders read image by image.

``load_dataset(cfg.data)`` returns a :class:`DataSet`: a :class:`MemoryDataset` (Fashion-MNIST,
CIFAR, synthetic) or a :class:`FolderDataset` (any ImageNet-style folder), each making its own
batches (:mod:`roadmap.train.loaders`), so no caller asks which kind it has. Augmentation is
:mod:`roadmap.train.augment`'s; archives are read and checked by :mod:`roadmap.train.archives`.
A missing data set, or one that is not what it should be, raises :class:`DataError` with one
line naming the file and the fix, before training starts. ``DataSet.source`` says what was read
(the run records it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from roadmap.errors import first_line
from roadmap.train.archives import DEBIAN_FASHION_MNIST, DataError, read_cifar, read_fashion_mnist
from roadmap.train.augment import BatchAugment
from roadmap.train.loaders import (
    FolderTrainLoader,
    MemoryEvalLoader,
    MemoryTrainLoader,
    folder_eval_loader,
)

if TYPE_CHECKING:
    from roadmap.runtime import Dist
    from roadmap.schema import (
        ArchiveDataConfig,
        DataConfig,
        FolderDataConfig,
        SyntheticDataConfig,
        TrainConfig,
    )
    from roadmap.train.loaders import TrainBatches

__all__ = ["DEBIAN_FASHION_MNIST", "DataError", "DataSet", "FolderDataset", "MemoryDataset",
           "load_dataset"]


class DataSet(ABC):
    """What a run asks of a data set, whichever kind it is: its sizes, its training batches,
    the batches of its test set and validation split, and a copy with a validation split or a
    training subset."""

    num_classes: int
    source: dict
    """What the data set was read from (files, sizes, hashes; a folder's counts), for the
    run's record."""

    @property
    @abstractmethod
    def n_train(self) -> int:
        """Training images (after the validation split and the subset)."""

    @abstractmethod
    def labels(self) -> torch.Tensor:
        """The training images' labels, in order."""

    @abstractmethod
    def subset(self, keep: torch.Tensor, held: torch.Tensor | None = None) -> DataSet:
        """Training on the images ``keep``; with ``held``, those become the validation set."""

    @abstractmethod
    def train_batches(self, cfg: TrainConfig, batch_size: int, device: torch.device,
                      dist: Dist) -> TrainBatches:
        """Training batches with the recipe's augmentation, this process's share."""

    @abstractmethod
    def eval_batches(self, cfg: TrainConfig, device: torch.device, dist: Dist,
                     split: str = "test") -> Iterable | None:
        """Batches of the ``test`` set or the ``val`` split (None when there is none)."""

    def with_validation(self, size: int, seed: int) -> DataSet:
        """This set with ``size`` training images moved to a validation set (0: none)."""
        if size == 0:
            return self
        train, val = stratified_split(self.labels(), size, seed)
        return self.subset(train, val)

    def with_train_images(self, count: int | None) -> DataSet:
        """This set training on a fixed, stratified ``count`` of its training images (after
        the validation split; None: all of them)."""
        if count is None:
            return self
        _, keep = stratified_split(self.labels(), count, TRAIN_SUBSET_SEED,
                                   "data.train_images", f"null for all {self.n_train}")
        return self.subset(keep)


@dataclass
class MemoryDataset(DataSet):
    """A whole data set as tensors: images ``(N, C, H, W)`` uint8, labels ``(N,)`` int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    val_images: torch.Tensor | None = None
    """Held out of the training set (``data.val_size``): for every choice; the test set only
    reports."""
    val_labels: torch.Tensor | None = None
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images"):
            images = getattr(self, name)
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise DataError(f"{name} must be uint8 (N, C, H, W), got {images.dtype} "
                                f"{tuple(images.shape)}")

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    def labels(self) -> torch.Tensor:
        return self.train_labels

    def subset(self, keep: torch.Tensor, held: torch.Tensor | None = None) -> MemoryDataset:
        val = {} if held is None else {"val_images": self.train_images[held],
                                       "val_labels": self.train_labels[held]}
        return replace(self, train_images=self.train_images[keep],
                       train_labels=self.train_labels[keep], **val)

    def train_batches(self, cfg: TrainConfig, batch_size: int, device: torch.device,
                      dist: Dist) -> MemoryTrainLoader:
        augment = BatchAugment(cfg.data, cfg.recipe, self.num_classes)
        return MemoryTrainLoader(self, batch_size, augment, device, dist.rank, dist.world,
                                 chunk=cfg.augment_batches)

    def eval_batches(self, cfg: TrainConfig, device: torch.device, dist: Dist,
                     split: str = "test") -> MemoryEvalLoader | None:
        images, labels = ((self.test_images, self.test_labels) if split == "test"
                          else (self.val_images, self.val_labels))
        if images is None:
            return None
        return MemoryEvalLoader(images, labels, cfg.eval_batch_size, cfg.data.mean,
                                cfg.data.std, device, dist.rank, dist.world)


@dataclass
class FolderDataset(DataSet):
    """An ImageNet-style folder: torchvision ``ImageFolder`` for train and val, decoding images
    to PIL (the loaders add the transforms)."""

    train: Dataset
    test: Dataset
    num_classes: int
    val: Dataset | None = None
    """Carved from ``train/`` when ``data.val_size`` > 0 (decoded like the test set)."""
    source: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.train)

    def labels(self) -> torch.Tensor:
        train, indices = self.train, None
        if isinstance(train, Subset):
            train, indices = train.dataset, train.indices
        targets = torch.tensor(train.targets)
        return targets if indices is None else targets[torch.tensor(indices, dtype=torch.long)]

    def subset(self, keep: torch.Tensor, held: torch.Tensor | None = None) -> FolderDataset:
        val = {} if held is None else {"val": Subset(self.train, held.tolist())}
        return replace(self, train=Subset(self.train, keep.tolist()), **val)

    def train_batches(self, cfg: TrainConfig, batch_size: int, device: torch.device,
                      dist: Dist) -> FolderTrainLoader:
        return FolderTrainLoader(self, batch_size, cfg.data, cfg.recipe, self.num_classes,
                                 device, cfg.workers, dist.rank, dist.world)

    def eval_batches(self, cfg: TrainConfig, device: torch.device, dist: Dist,
                     split: str = "test") -> DataLoader | None:
        images = self.test if split == "test" else self.val
        if images is None:
            return None
        return folder_eval_loader(images, cfg.eval_batch_size, cfg.data, cfg.recipe,
                                  cfg.workers, dist.rank, dist.world)


def stratified_split(labels: torch.Tensor, size: int, seed: int, key: str = "data.val_size",
                     off: str = "0 for no validation split") -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
    """(rest, held) indices: ``size`` images held out with every class in its share of
    ``labels`` (largest remainders), chosen by a generator seeded with ``seed`` alone, so the
    split is the same for every run, step and training seed. ``key`` and ``off`` (its value
    that turns it off) name the setting in the error an impossible ``size`` raises."""
    n = len(labels)
    if not 0 < size < n:
        raise DataError(f"{key}={size} is invalid for {n} training images: must be "
                        f"between 1 and {n - 1}, or {off}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    classes, counts = labels.unique(return_counts=True)
    quota = counts.double() * size / n
    take = quota.floor().long()
    extra = (quota - take).argsort(descending=True, stable=True)[: size - int(take.sum())]
    take[extra] += 1
    shuffled = labels[perm]
    val = torch.cat([perm[shuffled == c][:k] for c, k in zip(classes, take, strict=True)])
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val.sort().values


TRAIN_SUBSET_SEED = 1
"""The subset of ``data.train_images`` is drawn with its own fixed seed (the validation split's
is ``data.val_seed``): the same images for every run, step and training seed."""


def load_dataset(data: DataConfig) -> DataSet:
    """The data set named by ``data.name``, with its validation split and training subset."""
    loaders = {"fashion_mnist": load_archive, "cifar10": load_archive, "cifar100": load_archive,
               "imagefolder": load_imagefolder, "synthetic": make_synthetic}
    dataset = loaders[data.name](data)
    if dataset.num_classes != data.num_classes:
        raise DataError(f"data.num_classes={data.num_classes} but the data set has "
                        f"{dataset.num_classes} classes; set data.num_classes="
                        f"{dataset.num_classes}")
    return dataset.with_validation(data.val_size, data.val_seed).with_train_images(
        data.train_images)


def load_archive(data: ArchiveDataConfig) -> MemoryDataset:
    """Fashion-MNIST or CIFAR, read and checked by :mod:`roadmap.train.archives`."""
    arrays = (read_fashion_mnist if data.name == "fashion_mnist" else read_cifar)(data)
    return MemoryDataset(arrays.train_images, arrays.train_labels, arrays.test_images,
                         arrays.test_labels, arrays.num_classes, source=arrays.source)


# -- image folders ------------------------------------------------------------------------------

def load_imagefolder(data: FolderDataConfig) -> FolderDataset:
    from torchvision.datasets import ImageFolder

    if data.root is None:
        raise DataError("data.root is not set; fix: data.root=<a folder with "
                        f"{data.train_dir}/<class>/*.jpg and {data.val_dir}/<class>/*.jpg>")
    root = Path(data.root).expanduser()
    train_dir, val_dir = root / data.train_dir, root / data.val_dir
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DataError(f"image folder {d} not found; fix: set data.root to a folder with "
                            f"{data.train_dir}/<class>/*.jpg and {data.val_dir}/<class>/*.jpg")
    try:
        train, test = ImageFolder(str(train_dir)), ImageFolder(str(val_dir))
    except FileNotFoundError as exc:  # no class folder, or a class folder with no image
        raise DataError(f"{first_line(exc)}; fix: every class folder of {train_dir} and {val_dir} "
                        "needs at least one image (.jpg, .png, ...)") from None
    if train.classes != test.classes:
        raise DataError(f"{train_dir} and {val_dir} have different classes")
    if data.check_images:
        for folder in (train, test):
            check_image_headers(folder.samples)
    source = {"root": str(root.resolve()), "train_images": len(train),
              "test_images": len(test), "classes": len(train.classes)}
    return FolderDataset(train, test, num_classes=len(train.classes), source=source)


def check_image_headers(samples: list[tuple[str, int]]) -> None:
    """Open every image's header (no decoding: a few KB each), so that a file that is not an
    image fails now, in one line, rather than hours into training. Images whose data are
    damaged past the header are skipped and counted while training (``roadmap.train.loaders``)."""
    from PIL import Image

    for path, _ in samples:
        try:
            with Image.open(path):
                pass
        except Exception as exc:
            raise DataError(f"{path} is not a readable image ({first_line(exc)}); fix: remove or "
                            "replace it, or set data.check_images=false to skip such files "
                            "while training") from None


# -- synthetic ----------------------------------------------------------------------------------

def make_synthetic(data: SyntheticDataConfig) -> MemoryDataset:
    """Each class a fixed smooth random pattern; an image is its pattern, shifted, plus noise."""
    g = torch.Generator().manual_seed(1234)  # the data set is fixed, whatever the run's seed
    size, k, c = data.image_size, data.num_classes, data.in_chans
    coarse = torch.rand(k, c, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic",
                                                align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % k
        x = templates[labels]
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        x = torch.stack([torch.roll(img, tuple(s.tolist()), dims=(1, 2))
                         for img, s in zip(x, shifts, strict=True)])
        x = x + data.noise * torch.randn(x.shape, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels

    source = {"generated": {"seed": 1234, "train_size": data.train_size,
                            "test_size": data.test_size, "noise": data.noise}}
    return MemoryDataset(*split(data.train_size), *split(data.test_size), num_classes=k,
                         source=source)
