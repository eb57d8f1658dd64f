"""Batches for training and evaluation, sharded across processes.

In-memory data sets are indexed directly (no DataLoader): one seeded permutation per epoch, the
same on every process, each process taking its own slice, the batch moved to the device as uint8
and augmented there. Image folders use a DataLoader whose worker processes decode and augment
image by image. Either way the augmentation is :mod:`roadmap.train.augment`'s.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from roadmap.train.augment import (
    BatchAugment,
    Normalize,
    check_even_batch,
    folder_eval_transform,
    folder_train_transform,
    mixup,
)

if TYPE_CHECKING:
    from roadmap.schema import FolderDataConfig, RecipeConfig
    from roadmap.train.data import FolderDataset, MemoryDataset


class TrainBatches(Protocol):
    """A data set's training batches: an epoch's, by seed, and the images skipped so far."""

    skipped: int

    def __len__(self) -> int: ...

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class MemoryTrainLoader:
    """Training batches of a :class:`MemoryDataset`: shuffled, sharded, augmented on ``device``,
    ``chunk`` batches at a time (:meth:`BatchAugment.batches`; any other callable augments batch
    by batch)."""

    skipped = 0
    """Images in memory never fail to decode."""

    def __init__(self, dataset: MemoryDataset, batch_size: int, augment: BatchAugment,
                 device: torch.device, rank: int = 0, world: int = 1, chunk: int = 1) -> None:
        self.images = dataset.train_images.to(device)
        self.labels = dataset.train_labels.to(device)
        self.batch_size, self.augment, self.rank, self.world = batch_size, augment, rank, world
        self.chunk = chunk
        self.per_rank = len(self.labels) // world
        if self.per_rank < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the {self.per_rank} "
                             "training images per process; lower batch_size")
        check_even_batch(getattr(augment, "mix", None), batch_size)  # any callable augments

    def __len__(self) -> int:
        return self.per_rank // self.batch_size

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.labels), generator=g)[self.rank::self.world]
        order = order[: len(self) * self.batch_size].to(self.images.device)
        for chunk in order.split(self.chunk * self.batch_size):
            images = self.images.index_select(0, chunk)  # faster than [chunk] on the CPU
            labels = self.labels.index_select(0, chunk)
            if isinstance(self.augment, BatchAugment):
                yield from self.augment.batches(images, labels, self.batch_size)
            else:
                yield from (self.augment(x, y) for x, y in zip(
                    images.split(self.batch_size), labels.split(self.batch_size), strict=True))


class MemoryEvalLoader:
    """Batches of a held-out set (test or validation), this process's share, normalised."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std,
                 device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.images = images[rank::world].to(device)
        self.labels = labels[rank::world].to(device)
        self.batch_size = batch_size
        self.normalize = Normalize(mean, std)

    def __iter__(self):
        for start in range(0, len(self.labels), self.batch_size):
            end = start + self.batch_size
            yield self.normalize(self.images[start:end]), self.labels[start:end]


class ShardSampler(Sampler[int]):
    """Every index once over all processes: this process's slice, in order (for evaluation)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _path(images, index: int) -> str:
    """The file of an ImageFolder's image, through any ``Subset``."""
    while hasattr(images, "indices"):
        images, index = images.dataset, images.indices[index]
    return images.samples[index][0]


class Transformed(Dataset):
    """An image folder whose images pass through ``transform``. An image that cannot be decoded
    (a decompression bomb included) is reported (its path, once per process), counted in
    ``skipped`` (shared by the loader's worker processes) and, for training, replaced by the
    next readable one, so a damaged file never stops a run hours in. For evaluation
    (``replace`` false) it is left out: a blank image labelled :data:`LEFT_OUT`, which
    :func:`roadmap.train.loop.evaluate` drops and counts, so top-1 is measured on the readable
    images and says how many were not."""

    def __init__(self, images, transform, replace: bool = True) -> None:
        self.images, self.transform, self.replace = images, transform, replace
        self.skipped = multiprocessing.Value("i", 0)
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        for attempt in range(len(self.images)):
            i = (index + attempt) % len(self.images)
            try:
                image, label = self.images[i]
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self._skip(i, exc)
                if not self.replace:
                    return self.transform(Image.new("RGB", (8, 8))), LEFT_OUT
                continue
            return self.transform(image), label
        raise RuntimeError("no image of the folder can be decoded")

    def _skip(self, index: int, exc: Exception) -> None:
        with self.skipped.get_lock():
            self.skipped.value += 1
        if index not in self._reported:
            self._reported.add(index)
            print(f"roadmap: skipped unreadable image {_path(self.images, index)} ({exc})",
                  file=sys.stderr)


class FolderTrainLoader:
    """Training batches of an image folder, decoded and augmented image by image in ``workers``
    processes, this process's share; Mixup/CutMix on the batch."""

    def __init__(self, dataset: FolderDataset, batch_size: int, data: FolderDataConfig,
                 recipe: RecipeConfig, num_classes: int,
                 device: torch.device, workers: int, rank: int = 0, world: int = 1) -> None:
        train = Transformed(dataset.train, folder_train_transform(data, recipe))
        # shuffled by (seed, epoch) alike on every process, each taking its slice
        self.sampler = DistributedSampler(train, num_replicas=world, rank=rank,
                                          shuffle=True, drop_last=True)
        self.options = dict(batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                            pin_memory=device.type == "cuda", drop_last=True)
        self.n_batches = len(self.sampler) // batch_size
        self.mix = mixup(recipe, num_classes)
        check_even_batch(self.mix, batch_size)
        self.device, self.train = device, train

    def __len__(self) -> int:
        return self.n_batches

    @property
    def skipped(self) -> int:
        """Training images skipped so far because they could not be decoded."""
        return self.train.skipped.value

    def epoch(self, seed: int):
        """The epoch's batches. The permutation (the sampler's) and every worker's random state
        (a fresh loader per epoch, its workers seeded from a generator seeded here) follow from
        ``seed`` alone, so a resumed epoch draws what an uninterrupted one would."""
        self.sampler.set_epoch(seed)
        loader = DataLoader(self.train, generator=torch.Generator().manual_seed(seed),
                            **self.options)
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield self.mix(x, y) if self.mix is not None else (x, y)


LEFT_OUT = -1
"""The label of an evaluation image that could not be decoded."""


def folder_eval_loader(images: Dataset, batch_size: int, data: FolderDataConfig,
                       recipe: RecipeConfig, workers: int, rank: int, world: int) -> DataLoader:
    """Batches of a held-out image set (test, or the validation subset of train/)."""
    test = Transformed(images, folder_eval_transform(data, recipe), replace=False)
    return DataLoader(test, batch_size=batch_size, sampler=ShardSampler(len(test), rank, world),
                      num_workers=workers)
