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

import functools
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
# Each image's op falls in one of three groups, each run once for the whole batch: a lookup
# table per image (the ops that map each value to a value, including brightness and contrast,
# whose PIL blend is against one colour), a blend with a degenerate image (colour, sharpness),
# a resampling (the geometric ops).

LUT_OPS = ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
           "SolarizeAdd", "BrightnessIncreasing", "ContrastIncreasing")
BLEND_OPS = ("ColorIncreasing", "SharpnessIncreasing")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")

BANK = {  # name: (scale, cap, table at integer level k)
    "PosterizeIncreasing": (4, 4, lambda v, k: torch.floor(v / 2 ** (4 + k)) * 2 ** (4 + k)),
    "SolarizeIncreasing": (256, 256, lambda v, k: torch.where(v >= 256 - k, 255 - v, v)),
    "SolarizeAdd": (110, 128, lambda v, k: torch.where(v < 128, (v + k).clamp(max=255), v))}
"""The tables that depend on the magnitude only, at level ``k = int(m / 10 * scale)`` (at most
``cap``): posterize drops ``k`` of its 4 bits, solarize's threshold drops by ``k``,
solarize-add adds ``k``."""


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """Per device, once: the table bank, and per op (shifted by one: slot 0 is "none") its bank
    row, level scale and cap, and its group."""
    v = torch.arange(256.0, device=device)
    base, scale, cap = (torch.zeros(len(OPS) + 1) for _ in range(3))
    rows = [v, 255 - v]  # identity, invert, then each BANK op's tables for levels 0..cap
    base[OPS.index("Invert") + 1] = 1
    for name, (s, c, table) in BANK.items():
        slot = OPS.index(name) + 1
        base[slot], scale[slot], cap[slot] = len(rows), s, c
        rows += [table(v, level) for level in range(c + 1)]
    group = torch.zeros(len(OPS) + 1, dtype=torch.long)
    for g, names in enumerate((LUT_OPS, BLEND_OPS, GEOMETRIC), start=1):
        for name in names:
            group[OPS.index(name) + 1] = g
    return {"v": v, "bank": torch.stack(rows), "base": base.long().to(device),
            "scale": scale.to(device), "cap": cap.to(device), "group": group.to(device)}


@functools.lru_cache(maxsize=8)
def _geometry(device: torch.device, h: int, w: int) -> dict[str, torch.Tensor]:
    """Per device and size, once: the pixel centres in normalised coordinates, and the rows of
    :func:`geometric_thetas` (the identity, the rotation's off-diagonal, per op its change per
    unit of level)."""
    slope = torch.zeros(len(OPS) + 1, 6)
    slope[OPS.index("ShearX") + 1, 1:3] = 0.3 * h / w
    slope[OPS.index("ShearY") + 1, 3:6:2] = 0.3 * w / h
    slope[OPS.index("TranslateXRel") + 1, 2] = slope[OPS.index("TranslateYRel") + 1, 5] = 0.9
    return {"u": ((torch.arange(w, device=device) + 0.5) * 2 / w - 1).view(1, 1, w, 1),
            "v": ((torch.arange(h, device=device) + 0.5) * 2 / h - 1).view(1, h, 1, 1),
            "identity": torch.tensor([1.0, 0, 0, 0, 1, 0], device=device),
            "turn": torch.tensor([0.0, h / w, 0, -w / h, 0, 0], device=device),
            "slope": slope.to(device)}


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` (ITU-R 601-2, rounded); a grey image stays as it is."""
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def _factor(m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The increasing blends' factor, ``max(0.1, 1 +- 0.9 m / 10)``."""
    return (1.0 + sign * m / LEVEL * 0.9).clamp(min=0.1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor,
           shift: torch.Tensor | None = None) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)`` on 8-bit images: truncated, clipped
    (``degenerate + factor * (x - shift)``, ``shift`` the degenerate unless given)."""
    shift = degenerate if shift is None else shift
    return (degenerate + factor * (x - shift)).clamp(0, 255).trunc()


def _equalize_lut(flat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` table for every image and channel: (n, C, 256). PIL leaves
    out the pixels of the highest value present; when the rest are under 255 pixels (one value
    only, say) the table is the identity."""
    hist = torch.zeros(*flat.shape[:2], 256, device=flat.device).scatter_add_(
        2, flat, torch.ones_like(flat, dtype=torch.float32))
    last = hist.gather(2, flat.amax(2, keepdim=True))
    step = torch.floor((flat.shape[2] - last) / 255)
    before = hist.cumsum(2) - hist  # pixels below each value
    lut = torch.floor((torch.floor(step / 2) + before) / step.clamp(min=1)).clamp(max=255)
    return torch.where(step == 0, v, lut)


def _luts(x: torch.Tensor, flat: torch.Tensor, op: torch.Tensor, m: torch.Tensor,
          sign: torch.Tensor) -> torch.Tensor:
    """Each image's table for its op: (n, C, 256). Autocontrast, brightness and contrast are
    ``p + q (v - r)``, truncated and clipped: a stretch of [lo, hi] to [0, 255] (p = 0, r = lo),
    PIL's blend with black (p = r = 0) or with the grey image's mean (p = r = mean), q the
    stretch or the blend factor; the others come from the bank."""
    k = _constants(x.device)
    n, c = x.shape[:2]
    slot = op + 1
    level = torch.minimum(torch.floor(m / LEVEL * k["scale"][slot]), k["cap"][slot])
    lut = k["bank"][k["base"][slot] + level.long()].unsqueeze(1)
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    stretch = (hi > lo) & _is(op, "AutoContrast")
    contrast = _is(op, "ContrastIncreasing")
    mean = torch.floor(_gray(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    p = torch.where(contrast, mean, 0.0)
    r = torch.where(stretch, lo, p)
    q = torch.where(stretch, 255.0 / (hi - lo).clamp(min=1),
                    _factor(m, sign).view(n, 1, 1, 1))
    linear = stretch | contrast | _is(op, "BrightnessIncreasing")
    lut = torch.where(linear.view(n, c, 1), _blend(p, k["v"], q, r).view(n, c, 256), lut)
    if bool((op == OPS.index("Equalize")).any()):
        lut = torch.where(_is(op, "Equalize", 2), _equalize_lut(flat, k["v"]), lut)
    return lut


def _is(op: torch.Tensor, name: str, ndim: int = 3) -> torch.Tensor:
    return (op == OPS.index(name)).view(-1, *([1] * ndim))


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3x3, centre 5, the rest 1, over 13, rounded; borders kept), from
    row and column sums of whole values (exact in float)."""
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    out = x.clone()
    out[..., 1:-1, 1:-1] = torch.floor((box + 4 * x[..., 1:-1, 1:-1]) / 13 + 0.5)
    return out


def _degenerate(x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """What colour and sharpness blend with (PIL's ImageEnhance): the grey image, the
    SMOOTH-filtered image."""
    if not bool((op == OPS.index("SharpnessIncreasing")).any()):
        return _gray(x).expand_as(x)
    return torch.where(_is(op, "ColorIncreasing"), _gray(x).expand_as(x), _smooth(x))


def colour_ops_(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor, sign: torch.Tensor,
                group: torch.Tensor) -> None:
    """The ten colour ops, in place in ``x``: one table lookup for the images whose op maps values
    (``group`` 1), one blend for colour and sharpness (``group`` 2)."""
    n, c, h, w = x.shape
    chosen = (group == 1).nonzero().flatten()
    if len(chosen):
        sub = x.index_select(0, chosen)
        flat = sub.reshape(len(chosen), c, h * w).long()
        lut = _luts(sub, flat, op[chosen], m[chosen], sign[chosen])
        x.index_copy_(0, chosen, lut.gather(2, flat).view_as(sub))
    chosen = (group == 2).nonzero().flatten()
    if len(chosen):
        sub = x.index_select(0, chosen)
        factor = _factor(m[chosen], sign[chosen]).view(-1, 1, 1, 1)
        x.index_copy_(0, chosen, _blend(_degenerate(sub, op[chosen]), sub, factor))


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE)`` in normalised coordinates (-1 and 1: the image's outer
    edges, pixel centres inside): output point (u, v) takes the input at ``theta @ (u, v, 1)``,
    resampled bicubically; outside the image (a hard edge, as PIL), the fill colour."""
    n, _, h, w = x.shape
    g = _geometry(x.device, h, w)
    columns = theta.view(n, 1, 1, 2, 3)
    grid = columns[..., 0] * g["u"] + columns[..., 1] * g["v"] + columns[..., 2]
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    inside = (grid.abs().amax(-1) <= 1).unsqueeze(1)
    return torch.where(inside, out.round().clamp(0, 255), fill.view(1, -1, 1, 1))


def geometric_thetas(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor,
                     sign: torch.Tensor) -> torch.Tensor:
    """Per image, its geometric op's map from output to input point in normalised coordinates
    (n, 2, 3). PIL's pixel maps as timm sets them, with ``l = sign * m / 10``: rotate
    ``x' = cos (x - w/2) + sin (y - h/2) + w/2`` (and ``y'`` alike; an angle of ``-30 l``
    degrees turns the image counter-clockwise), shear ``x' = x + 0.3 l y`` (or y), translate
    ``x' = x + 0.45 l w`` (or y); with ``x = (u + 1) w / 2`` these become rows of
    ``cos A + sin B + l slope[op]`` (A the identity, B the rotation's off-diagonal)."""
    g = _geometry(x.device, *x.shape[-2:])
    level = sign * m / LEVEL
    angle = -torch.deg2rad(level * 30) * (op == OPS.index("Rotate"))
    theta = (torch.cos(angle).unsqueeze(1) * g["identity"]
             + torch.sin(angle).unsqueeze(1) * g["turn"] + level.unsqueeze(1) * g["slope"][op + 1])
    return theta.view(-1, 2, 3)


def apply_ops_(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor, sign: torch.Tensor,
               fill: torch.Tensor) -> torch.Tensor:
    """Every image's op (``op`` = -1: none), each group of ops once for the whole batch, in
    place (each group reads its own images only)."""
    group = _constants(x.device)["group"][op + 1]
    colour_ops_(x, op, m, sign, group)
    chosen = (group == 3).nonzero().flatten()
    if len(chosen):
        sub = x.index_select(0, chosen)
        theta = geometric_thetas(sub, op[chosen], m[chosen], sign[chosen])
        x.index_copy_(0, chosen, _affine(sub, theta, fill))
    return x


def _single(name: str) -> Callable:
    def one_op(x, m, sign, fill):
        op = torch.full_like(m, OPS.index(name), dtype=torch.long)
        return apply_ops_(x.clone(), op, m, sign, fill)
    return one_op


OP_FNS: dict[str, Callable] = {name: _single(name) for name in OPS}
"""Each op alone on a batch, through the same code as RandAugment (for tests)."""


# -- RandAugment on a batch ---------------------------------------------------------------------

@dataclass
class Draw:
    """Every layer's random choices, per image: (num_ops, n) each."""

    op: torch.Tensor         # index into OPS
    applied: torch.Tensor    # bool: the op's probability came up
    magnitude: torch.Tensor  # after noise and clipping
    sign: torch.Tensor       # +1 / -1 for the ops with a direction


class BatchRandAugment:
    """``rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc1`` on uint8 batches."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5,
                 prob: float = 0.5, fill: Sequence[float] = (128,)) -> None:
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, magnitude, magnitude_std
        self.prob, self.fill = prob, torch.tensor([float(v) for v in fill])

    def draw(self, n: int, device: torch.device | str = "cpu") -> Draw:
        """Every layer's choices for ``n`` images at once: tensors of (num_ops, n)."""
        shape = (self.num_ops, n)
        magnitude = torch.full(shape, float(self.magnitude), device=device)
        if self.magnitude_std > 0:
            magnitude = magnitude + self.magnitude_std * torch.randn(shape, device=device)
        coins = torch.rand(2, *shape, device=device)
        return Draw(op=torch.randint(0, len(OPS), shape, device=device),
                    applied=coins[0] < self.prob, magnitude=magnitude.clamp(0, LEVEL),
                    sign=torch.where(coins[1] < 0.5, -1.0, 1.0))

    def apply(self, x: torch.Tensor, draw: Draw, layer: int) -> torch.Tensor:
        """One layer: every image's op, where its probability came up."""
        fill = self.fill.to(x.device).expand(x.shape[1])
        op = torch.where(draw.applied[layer], draw.op[layer], -1)
        return apply_ops_(x, op, draw.magnitude[layer], draw.sign[layer], fill)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or whole-valued float) images -> a new float batch of whole values 0-255."""
        x = images.to(torch.float32, copy=True)
        draw = self.draw(len(x), x.device)
        for layer in range(self.num_ops):
            x = self.apply(x, draw, layer)
        return x


def random_erasing(x: torch.Tensor, prob: float, mode: str = "pixel", scale=(0.02, 1 / 3),
                   ratio=(0.3, 3.3), attempts: int = 10, inplace: bool = False) -> torch.Tensor:
    """timm's ``RandomErasing`` on a normalised batch: with probability ``prob`` an image gets
    one rectangle (area ``scale``, aspect ``ratio``; the first of ``attempts`` draws that fits)
    of per-pixel N(0, 1) noise (``mode="pixel"``), one N(0, 1) colour per channel (``rand``)
    or zeros (``const``). ``inplace``: into ``x`` itself."""
    n, c, h, w = x.shape
    dev = x.device
    r = torch.rand(n, 2 * attempts + 3, device=dev)  # every draw at once
    area = h * w * (scale[0] + (scale[1] - scale[0]) * r[:, :attempts])
    log_ratio = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * r[:, attempts:-3])
    size = torch.round(torch.sqrt(torch.stack([area * aspect, area / aspect])))  # height, width
    fits = (size[0] < h) & (size[1] < w)
    first = fits.to(torch.uint8).argmax(1).view(1, n, 1).expand(2, n, 1)
    eh, ew = size.gather(2, first).view(2, n, 1)
    top = torch.floor(r[:, -2:-1] * (h - eh + 1))
    left = torch.floor(r[:, -1:] * (w - ew + 1))
    chosen = ((r[:, -3] < prob) & fits.any(1)).nonzero().flatten()  # only the erased images
    rows = torch.arange(h, device=dev) - top[chosen]  # (k, h): offsets from the box's top
    cols = torch.arange(w, device=dev) - left[chosen]
    k = len(chosen)
    inside = (((rows >= 0) & (rows < eh[chosen])).view(k, 1, h, 1)
              & ((cols >= 0) & (cols < ew[chosen])).view(k, 1, 1, w))
    noise = {"pixel": lambda: torch.randn(k, c, h, w, device=dev),
             "rand": lambda: torch.randn(k, c, 1, 1, device=dev).expand(k, c, h, w),
             "const": lambda: torch.zeros(k, c, h, w, device=dev)}[mode]()
    out = x if inplace else x.clone()
    return out.index_copy_(0, chosen, torch.where(inside, noise, x.index_select(0, chosen)))
