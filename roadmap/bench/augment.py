"""The in-memory data path with the whole ``convnext`` recipe (RandAugment, Mixup/CutMix, random
erasing): batched on the device (:class:`roadmap.train.augment.BatchAugment`) against the
per-image version it replaces (timm's own PIL RandAugment and RandomErasing, image by image),
timed on the same batches in the same run, at batch 128 and 1024; and the batched path's share
of a ``cpu``-preset training step with that recipe."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from roadmap.conf import compose
from roadmap.results.stats import ratio_interval
from roadmap.train.augment import (
    BatchAugment,
    randaugment_spec,
    random_pad_crop_flip,
)

FULL_RECIPE = ("recipe.randaugment=true", "recipe.mixup_alpha=0.8", "recipe.cutmix_alpha=1.0",
               "recipe.random_erasing=0.25")
"""The convnext recipe's augmentation, all of it (the cpu preset turns most of it off)."""


class PerImageAugment:
    """The same recipe with timm's per-image pieces: crop and flip batched, then timm's
    RandAugment on each image as PIL, timm's RandomErasing image by image, Mixup/CutMix."""

    def __init__(self, data, recipe, num_classes: int) -> None:
        from timm.data.auto_augment import rand_augment_transform
        from timm.data.random_erasing import RandomErasing

        fill = tuple(min(255, round(255 * m)) for m in data.mean)
        self.ra = rand_augment_transform(randaugment_spec(recipe),
                                         {"img_mean": fill, "interpolation": Image.BICUBIC})
        self.erase = RandomErasing(recipe.random_erasing, mode=recipe.erasing_mode, device="cpu")
        self.batched = BatchAugment(data, recipe, num_classes)  # for its mixing and stats
        self.data = data

    def _randaugment(self, image: torch.Tensor) -> torch.Tensor:
        grey = image.shape[0] == 1
        pil = Image.fromarray(image[0].numpy() if grey else image.permute(1, 2, 0).numpy())
        out = torch.from_numpy(np.asarray(self.ra(pil)).copy())
        return out[None] if grey else out.permute(2, 0, 1)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        x = random_pad_crop_flip(images, self.data.padding, True)
        x = torch.stack([self._randaugment(image) for image in x])
        x = self.erase(self.batched.normalize(x))
        return self.batched.mix(x, labels)


def _timed(fn, images, labels) -> float:
    t0 = time.perf_counter()
    fn(images, labels)
    return time.perf_counter() - t0


def augment_rows(dataset, pairs: int) -> list[dict]:
    """Images/s of both versions at batch 128 and 1024 on the same images (CPU), timed in
    ``pairs`` alternating rounds after a warm-up; the speed-up is the geometric mean of the
    rounds' ratios with its 95% interval."""
    cfg = compose(["step=separate_downsampling", "preset=cpu", "logger=none", *FULL_RECIPE])
    batched = BatchAugment(cfg.data, cfg.recipe, cfg.data.num_classes)
    per_image = PerImageAugment(cfg.data, cfg.recipe, cfg.data.num_classes)
    rows = []
    for batch in (128, 1024):
        images, labels = dataset.train_images[:batch], dataset.train_labels[:batch]
        t_batched, t_per_image = [], []
        for i in range(pairs + 1):
            first, second = (batched, per_image) if i % 2 == 0 else (per_image, batched)
            times = {id(first): _timed(first, images, labels),
                     id(second): _timed(second, images, labels)}
            if i:  # round 0 warms up
                t_batched.append(times[id(batched)])
                t_per_image.append(times[id(per_image)])
        speedup, low, high = ratio_interval(t_batched, t_per_image)
        rows.append({"batch": batch, "pairs": pairs,
                     "batched_images_per_s": batch / statistics.median(t_batched),
                     "per_image_images_per_s": batch / statistics.median(t_per_image),
                     "speedup": speedup, "speedup_low": low, "speedup_high": high})
        print(f"augment batch {batch:5d}: batched {rows[-1]['batched_images_per_s']:8.0f} "
              f"img/s, per image {rows[-1]['per_image_images_per_s']:8.0f} img/s, "
              f"{speedup:.1f}x [{low:.1f}, {high:.1f}]", file=sys.stderr)
    return rows


def folder_rows(workers: int, images: int = 96, batches: int = 4) -> dict:
    """Image folders: timm's training transforms (convnext recipe, 224px) decoding and
    augmenting generated JPEGs (about ImageNet's mean size, 400x350) in ``workers`` loader
    processes: images/s in all and per worker, after a warm-up batch."""
    import tempfile
    from pathlib import Path

    from roadmap.conf import settings
    from roadmap.runtime import Dist
    from roadmap.train.data import load_dataset

    with tempfile.TemporaryDirectory() as root:
        g = torch.Generator().manual_seed(0)
        for split, n in (("train", images), ("val", 2)):
            for c in range(2):
                folder = Path(root) / split / f"class{c}"
                folder.mkdir(parents=True)
                for i in range(n // 2):
                    coarse = torch.rand(1, 3, 8, 8, generator=g)
                    pixels = torch.nn.functional.interpolate(coarse, size=(350, 400),
                                                             mode="bilinear")[0] * 255
                    Image.fromarray(pixels.permute(1, 2, 0).byte().numpy()).save(
                        folder / f"{i}.jpg", quality=90)
        cfg = compose(["step=recipe", "preset=imagenet", f"data.root={root}",
                       "data.num_classes=2", "batch_size=16", f"workers={workers}"])
        typed = settings(cfg)
        loader = load_dataset(typed.data).train_batches(typed, 16, torch.device("cpu"), Dist())
        seen, t0 = 0, None
        for i, (x, _) in enumerate(loader.epoch(0)):
            if i == 0:
                t0 = time.perf_counter()  # workers started and warm
                continue
            seen += len(x)
            if i == batches:
                break
        rate = seen / (time.perf_counter() - t0)
    print(f"folder workers {workers}: {rate:.0f} img/s, {rate / max(workers, 1):.0f} per worker",
          file=sys.stderr)
    return {"workers": workers, "images_per_s": rate,
            "per_worker_images_per_s": rate / max(workers, 1), "image_size": 224,
            "source": "generated 400x350 JPEGs"}
