"""Training augmentation: the recipe's pieces, on batches of tensors or image by image.

In-memory data sets are augmented a batch at a time on the training device
(:class:`BatchAugment`): crop and flip are vectorised over the batch; RandAugment and random
erasing draw their own parameters for every image (torchvision's v2 transforms draw one set per
call, which would give a whole batch the same op); Mixup/CutMix are per batch, as in timm.
Image folders use the same pieces image by image in the loader's worker processes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms import v2


class NoisyRandAugment(torch.nn.Module):
    """torchvision's RandAugment on timm's magnitude scale, with timm's per-op magnitude noise.

    ``magnitude`` is on timm's 0-10 scale (the paper's ``rand-m9-mstd0.5``): torchvision's
    magnitude is an index into ``num_magnitude_bins`` steps from 0 to each op's maximum, so 101
    bins make index ``10 * m`` the fraction ``m / 10`` of the maximum, as in timm. Every op draws
    its own magnitude ``m + std * N(0, 1)``, clipped to [0, 10].
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5,
                 fill: Any = None) -> None:
        super().__init__()
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, magnitude, magnitude_std
        self.op = v2.RandAugment(num_ops=1, magnitude=0, num_magnitude_bins=101, fill=fill)

    def forward(self, image: Any) -> Any:
        for _ in range(self.num_ops):
            m = self.magnitude
            if self.magnitude_std > 0:
                m += self.magnitude_std * float(torch.randn(()))
            self.op.magnitude = round(10 * min(max(m, 0.0), 10.0))
            image = self.op(image)
        return image


def random_pad_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad every image by ``padding`` and crop it back at its own random offset."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # (N, H', W', C)
    oy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (oy + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


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
    return roi_align(x, boxes.to(x.dtype), (size, size), spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def mixup_cutmix(recipe: Any, num_classes: int) -> v2.Transform | None:
    """Mixup or CutMix (switching with ``mix_switch_prob``), applied with ``mix_prob``."""
    choices, probs = [], []
    if recipe.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=recipe.mixup_alpha, num_classes=num_classes))
        probs.append(1 - recipe.mix_switch_prob if recipe.cutmix_alpha > 0 else 1.0)
    if recipe.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=num_classes))
        probs.append(recipe.mix_switch_prob if recipe.mixup_alpha > 0 else 1.0)
    if not choices:
        return None
    mix = v2.RandomChoice(choices, p=probs) if len(choices) > 1 else choices[0]
    return v2.RandomApply([mix], p=recipe.mix_prob) if recipe.mix_prob < 1 else mix


class BatchAugment:
    """The recipe's training augmentation for a uint8 batch on any device.

    Returns normalised float images and targets: class indices, or class probabilities once
    Mixup/CutMix mixed the batch. Label smoothing is the loss's job.
    """

    def __init__(self, data: Any, recipe: Any, num_classes: int) -> None:
        self.data, self.recipe, self.num_classes = data, recipe, num_classes
        self.randaugment = (NoisyRandAugment(recipe.randaugment_ops, recipe.randaugment_magnitude,
                                             recipe.randaugment_magnitude_std)
                            if recipe.randaugment else None)
        self.erase = (v2.RandomErasing(p=1.0, value="random") if recipe.random_erasing > 0
                      else None)
        self.mix = mixup_cutmix(recipe, num_classes)
        self.mean = torch.tensor(list(data.mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(list(data.std)).view(1, -1, 1, 1)
        if data.crop not in ("pad", "resized", "none"):
            raise ValueError(f"data.crop={data.crop} is invalid; valid values: pad, resized, none")

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        data, recipe = self.data, self.recipe
        x = images
        if data.crop == "pad":
            x = random_pad_crop(x, data.padding)
        elif data.crop == "resized":
            scale = tuple(data.get("scale", (0.08, 1.0)))
            crop = random_resized_crop(x.float(), data.image_size, scale)
            x = crop.round().clamp(0, 255).to(torch.uint8)
        if recipe.hflip:
            x = random_hflip(x)
        if self.randaugment is not None:
            x = torch.stack([self.randaugment(img) for img in x])
        x = normalize(x, self.mean, self.std)
        if self.erase is not None:
            chosen = (torch.rand(x.shape[0]) < recipe.random_erasing).nonzero().flatten().tolist()
            for i in chosen:
                x[i] = self.erase(x[i])
        if self.mix is not None:
            x, labels = self.mix(x, labels)
        return x, labels


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float, normalised per channel."""
    return (x.float().div_(255) - mean.to(x.device)) / std.to(x.device)


# -- image folders: the same pieces, image by image ---------------------------------------------

def _interpolation(data: Any) -> v2.InterpolationMode:
    return v2.InterpolationMode(data.get("interpolation", "bicubic"))


def folder_train_transform(data: Any, recipe: Any) -> v2.Compose:
    steps = [v2.ToImage(), v2.RandomResizedCrop(data.image_size, scale=tuple(data.scale),
                                                interpolation=_interpolation(data),
                                                antialias=True)]
    if recipe.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if recipe.randaugment:
        steps.append(NoisyRandAugment(recipe.randaugment_ops, recipe.randaugment_magnitude,
                                      recipe.randaugment_magnitude_std))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.mean), list(data.std))]
    if recipe.random_erasing > 0:
        steps.append(v2.RandomErasing(p=recipe.random_erasing, value="random"))
    return v2.Compose(steps)


def folder_eval_transform(data: Any) -> v2.Compose:
    resize = int(round(data.image_size / data.test_crop_ratio))
    return v2.Compose([
        v2.ToImage(), v2.Resize(resize, interpolation=_interpolation(data), antialias=True),
        v2.CenterCrop(data.image_size), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(data.mean), list(data.std)),
    ])
