"""Training augmentation: the recipe's pieces, on batches of tensors or image by image.

In-memory data sets are augmented a batch at a time on the training device
(:class:`BatchAugment`): crop and flip, timm's RandAugment and random erasing
(:mod:`roadmap.train.randaugment`) are vectorised over the batch with parameters drawn per image,
so the kernel launches per batch do not grow with the batch; Mixup/CutMix are timm's, per batch.
Image folders use timm's pipeline (``create_transform``, ``Mixup``) as the official ConvNeXt
code does: image by image in the loader's worker processes, Mixup per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from roadmap.schema import DataConfig, RecipeConfig
from roadmap.train.randaugment import BatchRandAugment, random_erasing


def random_pad_crop_flip(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Zero-pad every image by ``padding``, crop it back at its own random offset and (``flip``)
    mirror it with probability 0.5. The crops are one ``index_select`` from a view of the
    padded batch that starts a window at every element."""
    n, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        hp, wp = h + 2 * padding, w + 2 * padding
        offset = torch.randint(0, 2 * padding + 1, (2, n), device=dev)
        starts = torch.arange(n, device=dev) * (c * hp * wp) + offset[0] * wp + offset[1]
        last = (n - 1) * c * hp * wp + 2 * padding * (wp + 1) + 1
        windows = F.pad(x, (padding,) * 4).reshape(-1).as_strided(
            (last, c, h, w), (1, hp * wp, wp, 1))
        x = windows.index_select(0, starts)
    if flip:
        chosen = (torch.rand(n, device=dev) < 0.5).nonzero().flatten()
        x = x.clone() if padding <= 0 else x  # the crops are this call's own
        x.index_copy_(0, chosen, x.index_select(0, chosen).flip(-1))
    return x


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop of every image of a float batch at once (bilinear, via roi_align)."""
    n, _, h, w = x.shape
    area = h * w * torch.empty(n, device=x.device).uniform_(*scale)
    log_r = torch.empty(n, device=x.device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    cw = torch.sqrt(area * aspect).clamp(1, w)
    ch = torch.sqrt(area / aspect).clamp(1, h)
    x0 = torch.rand(n, device=x.device) * (w - cw)
    y0 = torch.rand(n, device=x.device) * (h - ch)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), x0, y0, x0 + cw,
                         y0 + ch], dim=1)
    from torchvision.ops import roi_align

    return roi_align(x, boxes.to(x.dtype), (size, size), spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class BatchAugment:
    """The recipe's training augmentation for a uint8 batch on any device.

    Returns normalised float images and targets: class indices, or class probabilities once
    Mixup/CutMix mixed the batch. Label smoothing is the loss's job.
    """

    def __init__(self, data: DataConfig, recipe: RecipeConfig, num_classes: int) -> None:
        self.data, self.recipe, self.num_classes = data, recipe, num_classes
        fill = [min(255, round(255 * m)) for m in data.mean]  # as timm's create_transform
        self.randaugment = (BatchRandAugment(recipe.randaugment_ops, recipe.randaugment_magnitude,
                                             recipe.randaugment_magnitude_std, fill=fill)
                            if recipe.randaugment else None)
        self.mix = mixup(recipe, num_classes)
        self.normalize = Normalize(data.mean, data.std)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        """One batch, augmented and mixed."""
        return next(self.batches(images, labels, len(images)))

    def batches(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        """``images`` augmented all at once (every image its own draws; the fixed cost of the
        calls shared by all), then Mixup/CutMix batch by batch of ``batch_size``, as it pairs
        the images of one batch."""
        x = self.augment(images)
        for xb, yb in zip(x.split(batch_size), labels.split(batch_size), strict=True):
            yield self.mix(xb, yb) if self.mix is not None else (xb, yb)  # mixed in place

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Crop, flip, RandAugment, normalisation, random erasing: a new float batch."""
        data, recipe = self.data, self.recipe
        x = images
        if data.crop == "resized":
            scale = tuple(getattr(data, "scale", (0.08, 1.0)))
            crop = random_resized_crop(x.float(), data.image_size, scale)
            x = crop.round().clamp(0, 255).to(torch.uint8)
            if recipe.hflip:
                x = random_hflip(x)
        else:
            x = random_pad_crop_flip(x, data.padding if data.crop == "pad" else 0, recipe.hflip)
        if self.randaugment is not None:
            x = self.randaugment(x)  # float, whole values
        x = self.normalize(x)
        if recipe.random_erasing > 0:  # x is this call's own: erase in place
            x = random_erasing(x, recipe.random_erasing, mode=recipe.erasing_mode, inplace=True)
        return x


class Normalize:
    """Images with values 0-255 (uint8, or float) -> float, normalised per channel:
    ``x * scale + shift`` (``scale = 1 / (255 std)``, ``shift = -mean / std``), as a multiply
    and an in-place add (faster than one ``addcmul`` on the CPU)."""

    def __init__(self, mean, std) -> None:
        std = torch.tensor([float(v) for v in std]).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std)
        self.shift = -torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1) / std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale.device != x.device:
            self.scale, self.shift = self.scale.to(x.device), self.shift.to(x.device)
        return torch.mul(x, self.scale).add_(self.shift)


# -- image folders: timm's pipeline, image by image, as the official ConvNeXt code builds it ------

def randaugment_spec(recipe: RecipeConfig) -> str | None:
    """The recipe's RandAugment in timm's notation (the paper's: ``rand-m9-mstd0.5-inc1``)."""
    if not recipe.randaugment:
        return None
    spec = (f"rand-m{recipe.randaugment_magnitude:g}-n{recipe.randaugment_ops}"
            f"-mstd{recipe.randaugment_magnitude_std:g}")
    return spec + ("-inc1" if recipe.randaugment_increasing else "")


def folder_train_transform(data: DataConfig, recipe: RecipeConfig):
    """timm's ``create_transform`` with the recipe's pieces, each its own flag: random-resized
    crop (``data.scale``, ``recipe.interpolation``), flip, RandAugment (timm applies colour
    jitter ``recipe.color_jitter`` only without it, as the official code gets it), random
    erasing (``recipe.random_erasing``, ``recipe.erasing_mode``). With the ``original`` recipe
    this is torchvision's classic bilinear random-resized crop + flip."""
    from timm.data import create_transform

    return create_transform(
        data.image_size, is_training=True, scale=tuple(data.scale), hflip=0.5 * recipe.hflip,
        color_jitter=recipe.color_jitter, auto_augment=randaugment_spec(recipe),
        interpolation=recipe.interpolation, mean=tuple(data.mean), std=tuple(data.std),
        re_prob=recipe.random_erasing, re_mode=recipe.erasing_mode, re_count=1)


def folder_eval_transform(data: DataConfig, recipe: RecipeConfig):
    """Resize to ``image_size / test_crop_ratio`` (``recipe.interpolation``), centre crop."""
    from timm.data import create_transform

    return create_transform(data.image_size, is_training=False, crop_pct=data.test_crop_ratio,
                            interpolation=recipe.interpolation, mean=tuple(data.mean),
                            std=tuple(data.std))


def mixup(recipe: RecipeConfig, num_classes: int):
    """timm's Mixup/CutMix on a batch, for image folders and in-memory data alike: one ``lam``
    per batch, the batch mixed with its reverse (``mix_prob``, CutMix rather than Mixup with
    ``mix_switch_prob``; the box's area corrects ``lam``), or None. It needs an even batch and
    mixes in place. Its targets are left unsmoothed: the loss applies
    ``recipe.label_smoothing`` to the mixed targets, which equals timm's smoothed targets with
    a soft-target cross-entropy."""
    if recipe.mixup_alpha <= 0 and recipe.cutmix_alpha <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                 prob=recipe.mix_prob, switch_prob=recipe.mix_switch_prob, mode="batch",
                 label_smoothing=0.0, num_classes=num_classes)


def check_even_batch(mix, batch_size: int) -> None:
    """timm's Mixup/CutMix pairs each image with the batch's reverse: an even batch only."""
    if mix is not None and batch_size % 2:
        raise ValueError(f"timm's Mixup/CutMix needs an even batch; this process's batch is "
                         f"{batch_size}: change batch_size (or total_batch)")
