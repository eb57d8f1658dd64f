"""timm's RandAugment (``rand-m9-mstd0.5-inc1``) and random erasing on a batch, on its device.

The same op set, probabilities and magnitude rules as ``timm.data.auto_augment`` (the paper's
pipeline), drawn per image, applied a batch at a time: every op runs once per layer on the
images that drew it, so the number of kernel launches does not grow with the batch.

- 2 layers; each draws one of the 15 ops uniformly (with replacement, as timm), applies it with
  probability 0.5 and draws its magnitude from N(9, 0.5) clipped to [0, 10];
- the increasing variants: posterize keeps ``4 - int(m / 10 * 4)`` bits, solarize from
  ``256 - int(m / 10 * 256)``, colour / contrast / brightness / sharpness blend by
  ``max(0.1, 1 +- 0.9 m / 10)``; rotate +-30 m / 10 degrees, shear +-0.3 m / 10, translate
  +-0.45 m / 10 of the size, with a random sign each;
- geometric ops resample bicubically (``grid_sample``; PIL's bicubic kernel differs slightly)
  and fill with the data set's mean colour, as timm's ``create_transform`` sets them.

Tested against timm in ``tests/train/test_randaugment.py`` (op frequencies, share of unchanged
images, magnitudes, and each op's output at fixed magnitudes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
       "TranslateYRel")
"""timm's ``_RAND_INCREASING_TRANSFORMS``, in its order."""

LEVEL = 10.0  # timm's _LEVEL_DENOM: magnitudes are on a 0-10 scale


# -- the ops: float images in [0, 255] with whole values, (n, C, H, W); m, sign: (n,) -----------

def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend`` (what ImageEnhance does): truncated and clipped to 0-255."""
    out = degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)
    return out.clamp(0, 255).trunc()


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` (ITU-R 601-2, rounded); a grey image stays as it is."""
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def _enhance_factor(m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return (1.0 + sign * m / LEVEL * 0.9).clamp(min=0.1)


def auto_contrast(x, m, sign, fill):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1)
    out = (x * scale - lo * scale).trunc().clamp(0, 255)
    return torch.where(hi > lo, out, x)


def equalize(x, m, sign, fill):
    """PIL's ``ImageOps.equalize``, per image and channel."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32))
    last = hist.gather(1, (255 - (hist.flip(1) > 0).float().argmax(1, keepdim=True)))
    step = torch.floor((hist.sum(1, keepdim=True) - last) / 255)
    before = hist.cumsum(1) - hist  # pixels below each value
    lut = torch.floor((torch.floor(step / 2) + before) / step.clamp(min=1)).clamp(max=255)
    identity = (step == 0) | ((hist > 0).sum(1, keepdim=True) <= 1)
    out = lut.gather(1, flat).reshape(n, c, h, w)
    return torch.where(identity.view(n, c, 1, 1), x, out)


def invert(x, m, sign, fill):
    return 255 - x


def posterize(x, m, sign, fill):
    bits = 4 - torch.floor(m / LEVEL * 4)
    step = (2 ** (8 - bits)).view(-1, 1, 1, 1)  # keep the top ``bits`` bits
    return torch.floor(x / step) * step


def solarize(x, m, sign, fill):
    thresh = (256 - torch.floor(m / LEVEL * 256).clamp(max=256)).view(-1, 1, 1, 1)
    return torch.where(x >= thresh, 255 - x, x)


def solarize_add(x, m, sign, fill):
    add = torch.floor(m / LEVEL * 110).clamp(max=128).view(-1, 1, 1, 1)
    return torch.where(x < 128, (x + add).clamp(max=255), x)


def color(x, m, sign, fill):
    return _blend(_gray(x).expand_as(x), x, _enhance_factor(m, sign))


def contrast(x, m, sign, fill):
    mean = torch.floor(_gray(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, _enhance_factor(m, sign))


def brightness(x, m, sign, fill):
    return _blend(torch.zeros_like(x), x, _enhance_factor(m, sign))


def sharpness(x, m, sign, fill):
    """PIL's SMOOTH filter (3x3, centre 5, the rest 1, /13; borders kept) as the degenerate."""
    c = x.shape[1]
    kernel = torch.ones(c, 1, 3, 3, device=x.device)
    kernel[:, :, 1, 1] = 5
    smooth = torch.floor(F.conv2d(x, kernel / 13, groups=c) + 0.5)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, _enhance_factor(m, sign))


def _affine(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE)``: output pixel (x, y) (centres at +0.5) takes the input
    at ``matrix @ (x, y, 1)``; outside the image, the fill colour. Bicubic."""
    n, _, h, w = x.shape
    size = torch.tensor([w, h], dtype=x.dtype, device=x.device)
    # normalised output coordinates u -> pixel coordinates -> input -> normalised
    to_pixels = torch.diag(torch.cat([size / 2, torch.ones(1, device=x.device)]))
    to_pixels[:2, 2] = size / 2
    to_norm = torch.linalg.inv(to_pixels)
    full = torch.eye(3, device=x.device).repeat(n, 1, 1)
    full[:, :2] = matrix
    theta = (to_norm @ full @ to_pixels)[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(-1, keepdim=True).permute(0, 3, 1, 2)  # as PIL: hard edges
    return torch.where(inside, out.round().clamp(0, 255), fill.view(1, -1, 1, 1))


def _matrix(n: int, device, a=1.0, b=0.0, c=0.0, d=0.0, e=1.0, f=0.0) -> torch.Tensor:
    rows = [torch.as_tensor(v, dtype=torch.float32, device=device).expand(n)
            for v in (a, b, c, d, e, f)]
    return torch.stack(rows, 1).view(n, 2, 3)


def rotate(x, m, sign, fill):
    """PIL's ``rotate(degrees)``: counter-clockwise about the centre (w/2, h/2)."""
    h, w = x.shape[-2:]
    angle = -torch.deg2rad(sign * m / LEVEL * 30)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = w / 2, h / 2
    c = cx - (cos * cx + sin * cy)
    f = cy - (-sin * cx + cos * cy)
    return _affine(x, _matrix(len(x), x.device, cos, sin, c, -sin, cos, f), fill)


def shear_x(x, m, sign, fill):
    return _affine(x, _matrix(len(x), x.device, b=sign * m / LEVEL * 0.3), fill)


def shear_y(x, m, sign, fill):
    return _affine(x, _matrix(len(x), x.device, d=sign * m / LEVEL * 0.3), fill)


def translate_x(x, m, sign, fill):
    return _affine(x, _matrix(len(x), x.device, c=sign * m / LEVEL * 0.45 * x.shape[-1]), fill)


def translate_y(x, m, sign, fill):
    return _affine(x, _matrix(len(x), x.device, f=sign * m / LEVEL * 0.45 * x.shape[-2]), fill)


OP_FNS: dict[str, Callable] = dict(zip(OPS, (
    auto_contrast, equalize, invert, rotate, posterize, solarize, solarize_add, color, contrast,
    brightness, sharpness, shear_x, shear_y, translate_x, translate_y), strict=True))


# -- RandAugment on a batch ---------------------------------------------------------------------

@dataclass
class Draw:
    """One layer's random choices, per image."""

    op: torch.Tensor         # (n,) index into OPS
    applied: torch.Tensor    # (n,) bool: the op's probability came up
    magnitude: torch.Tensor  # (n,) after noise and clipping
    sign: torch.Tensor       # (n,) +1 / -1 for the ops with a direction


class BatchRandAugment:
    """``rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc1`` on uint8 batches."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5,
                 prob: float = 0.5, fill: Sequence[float] = (128,)) -> None:
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, magnitude, magnitude_std
        self.prob, self.fill = prob, torch.tensor([float(v) for v in fill])

    def draw(self, n: int, device: torch.device | str = "cpu") -> Draw:
        magnitude = torch.full((n,), float(self.magnitude), device=device)
        if self.magnitude_std > 0:
            magnitude = magnitude + self.magnitude_std * torch.randn(n, device=device)
        return Draw(op=torch.randint(0, len(OPS), (n,), device=device),
                    applied=torch.rand(n, device=device) < self.prob,
                    magnitude=magnitude.clamp(0, LEVEL),
                    sign=torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0))

    def apply(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        """One layer: each op on the images that drew it (and whose probability came up)."""
        fill = self.fill.to(x.device).expand(x.shape[1])
        out = x.clone()
        for k, name in enumerate(OPS):
            chosen = ((draw.op == k) & draw.applied).nonzero().flatten()
            if len(chosen):
                out[chosen] = OP_FNS[name](x[chosen], draw.magnitude[chosen], draw.sign[chosen],
                                           fill)
        return out

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        for _ in range(self.num_ops):
            x = self.apply(x, self.draw(len(x), x.device))
        return x.to(torch.uint8)


def random_erasing(x: torch.Tensor, prob: float, mode: str = "pixel", scale=(0.02, 1 / 3),
                   ratio=(0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """timm's ``RandomErasing`` on a normalised batch: with probability ``prob`` an image gets
    one rectangle (area ``scale``, aspect ``ratio``; the first of ``attempts`` draws that fits)
    of per-pixel N(0, 1) noise (``mode="pixel"``), one N(0, 1) colour per channel (``rand``)
    or zeros (``const``)."""
    n, _, h, w = x.shape
    dev = x.device
    area = h * w * torch.empty(n, attempts, device=dev).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, attempts, device=dev).uniform_(math.log(ratio[0]),
                                                                     math.log(ratio[1])))
    eh = torch.round(torch.sqrt(area * aspect))
    ew = torch.round(torch.sqrt(area / aspect))
    fits = (ew < w) & (eh < h)
    first = fits.float().argmax(1, keepdim=True)
    chosen = (torch.rand(n, device=dev) < prob) & fits.any(1)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = torch.floor(torch.rand(n, device=dev) * (h - eh + 1))
    left = torch.floor(torch.rand(n, device=dev) * (w - ew + 1))
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1))
              & chosen.view(-1, 1, 1))
    noise = {"pixel": lambda: torch.randn_like(x),
             "rand": lambda: torch.randn(n, x.shape[1], 1, 1, device=dev).expand_as(x),
             "const": lambda: torch.zeros_like(x)}[mode]()
    return torch.where(inside[:, None], noise, x)
