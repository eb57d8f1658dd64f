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
ERASING_MODES = ("pixel", "rand", "const")


# -- the ops, on float images in [0, 255] with whole values, (n, C, H, W) ----------------------
# ``op``: (n,) index into OPS per image (-1: none), ``m``: (n,) magnitude, ``sign``: (n,) +-1.
# Ops of one kind run for the whole batch at once: the colour-mapping ops as one lookup table
# per image, the blends with one degenerate image per image, the geometric ops as one resampling.

LUT_OPS = ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
           "SolarizeAdd")
BLEND_OPS = ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
             "SharpnessIncreasing")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def _is(op: torch.Tensor, name: str, ndim: int = 3) -> torch.Tensor:
    return (op == OPS.index(name)).view(-1, *([1] * ndim))


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` (ITU-R 601-2, rounded); a grey image stays as it is."""
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def _equalize_lut(flat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` table for every image and channel: (n, C, 256)."""
    hist = torch.zeros(*flat.shape[:2], 256, device=flat.device).scatter_add_(
        2, flat, torch.ones_like(flat, dtype=torch.float32))
    last = hist.gather(2, 255 - (hist.flip(2) > 0).float().argmax(2, keepdim=True))
    step = torch.floor((hist.sum(2, keepdim=True) - last) / 255)
    before = hist.cumsum(2) - hist  # pixels below each value
    lut = torch.floor((torch.floor(step / 2) + before) / step.clamp(min=1)).clamp(max=255)
    return torch.where((step == 0) | ((hist > 0).sum(2, keepdim=True) <= 1), v, lut)


def _luts(x: torch.Tensor, flat: torch.Tensor, op: torch.Tensor, m: torch.Tensor):
    """Each image's table for its colour-mapping op (identity for the others): (n, C, 256)."""
    n, c = x.shape[:2]
    v = torch.arange(256.0, device=x.device).expand(n, c, 256)
    m = m.view(n, 1, 1)
    keep = 2 ** (8 - (4 - torch.floor(m / LEVEL * 4)))  # posterize keeps 4 - int(m/10*4) bits
    thresh = 256 - torch.floor(m / LEVEL * 256).clamp(max=256)
    add = torch.floor(m / LEVEL * 110).clamp(max=128)
    lo, hi = x.amin(dim=(2, 3)).unsqueeze(2), x.amax(dim=(2, 3)).unsqueeze(2)
    scale = 255.0 / (hi - lo).clamp(min=1)
    stretched = torch.where(hi > lo, (v * scale - lo * scale).clamp(0, 255).trunc(), v)
    lut = torch.where(_is(op, "AutoContrast", 2), stretched, v)
    if bool((op == OPS.index("Equalize")).any()):
        lut = torch.where(_is(op, "Equalize", 2), _equalize_lut(flat, v), lut)
    lut = torch.where(_is(op, "Invert", 2), 255 - v, lut)
    lut = torch.where(_is(op, "PosterizeIncreasing", 2), torch.floor(v / keep) * keep, lut)
    lut = torch.where(_is(op, "SolarizeIncreasing", 2), torch.where(v >= thresh, 255 - v, v), lut)
    return torch.where(_is(op, "SolarizeAdd", 2),
                       torch.where(v < 128, (v + add).clamp(max=255), v), lut)


def _degenerate(x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """What each blend op mixes the image with (PIL's ImageEnhance): its grey image (colour),
    the mean of its grey image (contrast), black (brightness), its SMOOTH-filtered image, 3x3
    with centre 5 and the rest 1, borders kept (sharpness)."""
    gray = _gray(x)
    mean = torch.floor(gray.mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    gray = gray.expand_as(x)
    smooth = x
    if bool((op == OPS.index("SharpnessIncreasing")).any()):
        n, c, h, w = x.shape
        kernel = torch.ones(n * c, 1, 3, 3, device=x.device)
        kernel[:, :, 1, 1] = 5
        smooth = x.clone()  # one channel per group: far faster than groups=C on 2 cores
        smooth[:, :, 1:-1, 1:-1] = torch.floor(F.conv2d(
            x.reshape(1, n * c, h, w), kernel / 13, groups=n * c).view(n, c, h - 2, w - 2) + 0.5)
    out = torch.where(_is(op, "ColorIncreasing"), gray, smooth)
    out = torch.where(_is(op, "ContrastIncreasing"), mean.expand_as(x), out)
    return torch.where(_is(op, "BrightnessIncreasing"), torch.zeros_like(x), out)


def colour_ops(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor,
               sign: torch.Tensor) -> torch.Tensor:
    """The ten colour ops, each image its own (images with a geometric op or none unchanged):
    one table lookup for all the images that drew a mapping op, one blend (PIL's
    ``Image.blend``: truncated and clipped to 0-255) for those that drew a blend."""
    n, c, h, w = x.shape
    out = x.clone()
    is_lut = torch.isin(op, torch.tensor([OPS.index(k) for k in LUT_OPS], device=x.device))
    chosen = is_lut.nonzero().flatten()
    if len(chosen):
        sub = x[chosen]
        flat = sub.reshape(len(chosen), c, h * w).long()
        out[chosen] = _luts(sub, flat, op[chosen], m[chosen]).gather(2, flat).view_as(sub)
    is_blend = torch.isin(op, torch.tensor([OPS.index(k) for k in BLEND_OPS], device=x.device))
    chosen = is_blend.nonzero().flatten()
    if len(chosen):
        sub, sub_op = x[chosen], op[chosen]
        degenerate = _degenerate(sub, sub_op)
        factor = (1.0 + sign[chosen] * m[chosen] / LEVEL * 0.9).clamp(min=0.1).view(-1, 1, 1, 1)
        out[chosen] = (degenerate + factor * (sub - degenerate)).clamp(0, 255).trunc()
    return out


def _affine(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE)``: output pixel (x, y) (centres at +0.5) takes the input
    at ``matrix @ (x, y, 1)``, resampled bicubically; outside the image (a hard edge, as PIL),
    the fill colour."""
    h, w = x.shape[-2:]
    a, b, c = matrix[:, 0].unbind(1)
    d, e, f = matrix[:, 1].unbind(1)
    # the same map in grid_sample's normalised coordinates (-1 and 1: the image's outer edges)
    u = ((torch.arange(w, device=x.device) + 0.5) * 2 / w - 1).view(1, 1, w)
    v = ((torch.arange(h, device=x.device) + 0.5) * 2 / h - 1).view(1, h, 1)

    def col(t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, 1, 1)

    gx = col(a) * u + col(b * h / w) * v + col(a + b * h / w + 2 * c / w - 1)
    gy = col(d * w / h) * u + col(e) * v + col(d * w / h + e + 2 * f / h - 1)
    grid = torch.stack([gx, gy], -1)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(-1, keepdim=True).permute(0, 3, 1, 2)
    return torch.where(inside, out.round().clamp(0, 255), fill.view(1, -1, 1, 1))


def geometric_matrices(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor,
                       sign: torch.Tensor) -> torch.Tensor:
    """Per image, PIL's affine matrix (output pixel -> input pixel) of its geometric op, or the
    identity: timm's rotate (counter-clockwise about (w/2, h/2), +-30 m/10 degrees), shears
    (+-0.3 m/10) and translations (+-0.45 m/10 of the size), all at once."""
    h, w = x.shape[-2:]
    is_op = {name: op == OPS.index(name) for name in GEOMETRIC}
    level = sign * m / LEVEL
    angle = -torch.deg2rad(level * 30)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = is_op["Rotate"]
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    a = torch.where(rot, cos, one)
    b = torch.where(rot, sin, torch.where(is_op["ShearX"], level * 0.3, zero))
    c = torch.where(rot, w / 2 - (cos * w / 2 + sin * h / 2),
                    torch.where(is_op["TranslateXRel"], level * 0.45 * w, zero))
    d = torch.where(rot, -sin, torch.where(is_op["ShearY"], level * 0.3, zero))
    f = torch.where(rot, h / 2 - (-sin * w / 2 + cos * h / 2),
                    torch.where(is_op["TranslateYRel"], level * 0.45 * h, zero))
    return torch.stack([a, b, c, d, a, f], 1).view(-1, 2, 3)


def apply_ops(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor, sign: torch.Tensor,
              fill: torch.Tensor) -> torch.Tensor:
    """Every image's op (``op`` = -1: none): colour ops for the whole batch at once, one
    resampling for the images with a geometric op."""
    out = colour_ops(x, op, m, sign)
    geometric = torch.tensor([OPS.index(name) for name in GEOMETRIC], device=x.device)
    chosen = torch.isin(op, geometric).nonzero().flatten()
    if len(chosen):
        matrices = geometric_matrices(x[chosen], op[chosen], m[chosen], sign[chosen])
        out[chosen] = _affine(x[chosen], matrices, fill)
    return out


def _single(name: str) -> Callable:
    def one_op(x, m, sign, fill):
        return apply_ops(x, torch.full_like(m, OPS.index(name), dtype=torch.long), m, sign, fill)
    return one_op


OP_FNS: dict[str, Callable] = {name: _single(name) for name in OPS}
"""Each op alone on a batch, through the same code as RandAugment (for tests)."""


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
        """One layer: every image's op, where its probability came up."""
        fill = self.fill.to(x.device).expand(x.shape[1])
        op = torch.where(draw.applied, draw.op, -1)
        return apply_ops(x, op, draw.magnitude, draw.sign, fill)

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
    chosen = chosen.nonzero().flatten()  # noise only for the images that are erased
    k, c = len(chosen), x.shape[1]
    noise = {"pixel": lambda: torch.randn(k, c, h, w, device=dev),
             "rand": lambda: torch.randn(k, c, 1, 1, device=dev).expand(k, c, h, w),
             "const": lambda: torch.zeros(k, c, h, w, device=dev)}[mode]()
    out = x.clone()  # callers may still hold ``x``
    out[chosen] = torch.where(inside[chosen, None], noise, x[chosen])
    return out
