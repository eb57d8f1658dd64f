"""Data sets: small ones as uint8 tensors in memory, image folders read image by image.

``load_dataset(cfg.data)`` returns a :class:`DataSet`: a :class:`MemoryDataset` (Fashion-MNIST,
CIFAR, synthetic) or a :class:`FolderDataset` (any ImageNet-style folder), each making its own
batches (:mod:`roadmap.train.loaders`), so no caller asks which kind it has. Augmentation is
:mod:`roadmap.train.augment`'s. A missing data set
raises :class:`DataError` with one line naming the paths tried and the fix, before training
starts.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from roadmap.errors import first_line
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

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataError(RuntimeError):
    """A data set cannot be found or read; the message says where it looked and what to do."""


class DataSet(ABC):
    """What a run asks of a data set, whichever kind it is: its sizes, its training batches,
    the batches of its test set and validation split, and a copy with a validation split or a
    training subset."""

    num_classes: int

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
    loaders = {"fashion_mnist": load_fashion_mnist, "cifar10": load_cifar, "cifar100": load_cifar,
               "imagefolder": load_imagefolder, "synthetic": make_synthetic}
    dataset = loaders[data.name](data)
    if dataset.num_classes != data.num_classes:
        raise DataError(f"data.num_classes={data.num_classes} but the data set has "
                        f"{dataset.num_classes} classes; set data.num_classes="
                        f"{dataset.num_classes}")
    return dataset.with_validation(data.val_size, data.val_seed).with_train_images(
        data.train_images)


# -- Fashion-MNIST ------------------------------------------------------------------------------

FASHION_FILES = {"train_images": "train-images-idx3-ubyte",
                 "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST's format), gzipped or not, as a uint8 tensor of its shape; a
    truncated, garbled or short file is a one-line :class:`DataError` naming it."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08 or ndim < 1:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        body = raw[4 + 4 * ndim:]
        if len(body) != math.prod(shape):
            raise ValueError(f"{len(body)} bytes of data where its header announces "
                             f"{math.prod(shape)}")
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"{path} is unreadable ({first_line(exc)}); fix: reinstall it (`apt-get "
                        "install --reinstall dataset-fashion-mnist`) or delete it so that it is "
                        "looked for elsewhere or downloaded again") from None
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dirs(root: Path) -> list[Path]:
    return [root / "fashion_mnist", root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]


def load_fashion_mnist(data: ArchiveDataConfig) -> MemoryDataset:
    root = Path(str(data.root)).expanduser()
    tried = fashion_mnist_dirs(root)
    for folder in tried:
        paths = {k: _find_idx(folder, stem) for k, stem in FASHION_FILES.items()}
        if all(paths.values()):
            break
    else:
        folder = root / "FashionMNIST" / "raw"
        error = "download=false"
        if data.download:
            try:
                from torchvision.datasets import FashionMNIST

                for train in (True, False):
                    FashionMNIST(str(root), train=train, download=True)
                paths = {k: _find_idx(folder, stem) for k, stem in FASHION_FILES.items()}
                error = None if all(paths.values()) else "files missing after download"
            except Exception as exc:  # no network, a proxy, a full disk...
                error = f"download failed: {first_line(exc)}"
        if error:
            raise DataError(
                f"Fashion-MNIST not found in {', '.join(map(str, tried))} ({error}); fix: "
                "`apt-get install dataset-fashion-mnist` (make data does it), or put the four "
                f"idx files in {root / 'fashion_mnist'}, or set data.root=<folder with them>")
    t = {k: read_idx(p) for k, p in paths.items()}
    pad = (data.image_size - t["train_images"].shape[-1]) // 2

    def images(x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]  # (N, 1, 28, 28)
        return torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad > 0 else x

    return MemoryDataset(images(t["train_images"]), t["train_labels"].long(),
                         images(t["test_images"]), t["test_labels"].long(), num_classes=10)


# -- CIFAR --------------------------------------------------------------------------------------

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "CIFAR100"),
}


def _read_cifar(folder: Path, files: list[str], label_key: str):
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def load_cifar(data: ArchiveDataConfig) -> MemoryDataset:
    """CIFAR-10/100 from torchvision's python archive in ``data.root`` (downloaded if allowed)."""
    subdir, train_files, test_files, label_key, tv_class = CIFAR[data.name]
    root = Path(str(data.root)).expanduser()
    folder = root / subdir
    if not all((folder / f).is_file() for f in train_files + test_files):
        error = "download=false"
        if data.download:
            try:
                import torchvision.datasets

                getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
                error = None
            except Exception as exc:
                error = f"download failed: {first_line(exc)}"
        if error:
            raise DataError(f"{data.name} not found in {folder} ({error}); fix: run once where "
                            f"there is network (data.download=true), or copy torchvision's "
                            f"{subdir}/ into {root}, or set data.root=<its parent folder>")
    train = _read_cifar(folder, train_files, label_key)
    test = _read_cifar(folder, test_files, label_key)
    return MemoryDataset(*train, *test, num_classes=100 if data.name == "cifar100" else 10)


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
    return FolderDataset(train, test, num_classes=len(train.classes))


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

    return MemoryDataset(*split(data.train_size), *split(data.test_size), num_classes=k)
