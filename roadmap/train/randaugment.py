"""timm's RandAugment (``rand-m9-mstd0.5-inc1``) and random erasing on a batch, on its device.

The same op set, probabilities and magnitude rules as ``timm.data.auto_augment`` (the paper's
pipeline), drawn per image, applied a batch at a time: each layer sorts the batch by op and
runs each kind of op once on its contiguous slice, so the number of kernel launches does not
grow with the batch (one host sync per layer: the ops' counts).

- 2 layers; each draws one of the 15 ops uniformly (with replacement, as timm), applies it with
  probability 0.5 and draws its magnitude from N(9, 0.5) clipped to [0, 10];
- the increasing variants: posterize keeps ``4 - int(m / 10 * 4)`` bits, solarize from
  ``256 - int(m / 10 * 256)``, colour / contrast / brightness / sharpness blend by
  ``max(0.1, 1 +- 0.9 m / 10)``; rotate +-30 m / 10 degrees, shear +-0.3 m / 10, translate
  +-0.45 m / 10 of the size, with a random sign each;
- geometric ops resample bicubically (``grid_sample``; PIL's bicubic kernel differs slightly)
  and fill with the data set's mean colour, as timm's ``create_transform`` sets them.

Tested against timm in ``tests/train/test_randaugment.py`` (op frequencies, share of unchanged
images, magnitudes, each op's output at fixed magnitudes, and a batch of every op at once).
On the CPU the per-call cost of ~300 small ops dominates at batch 128: the loader augments
several batches per call (``augment_batches``); ``make bench`` measures both.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
       "TranslateYRel")
"""timm's ``_RAND_INCREASING_TRANSFORMS``, in its order."""

LEVEL = 10.0  # timm's _LEVEL_DENOM: magnitudes are on a 0-10 scale
# -- the ops, on float images in [0, 255] with whole values, (n, C, H, W) ----------------------
# ``op``: (n,) index into OPS per image (-1: none), ``m``: (n,) magnitude, ``sign``: (n,) +-1.
# A layer sorts its images by op (:data:`SEQUENCE`), so each op's images, and each kind's, are a
# contiguous slice, and runs each kind once on its slice: a table per image (the bank's ops; the
# linear ones, including brightness and contrast, whose PIL blend is against one colour;
# equalize), a blend with a degenerate image (colour, sharpness), a resampling (geometric).

BANK_OPS = ("Invert", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd")
LINEAR_OPS = ("AutoContrast", "BrightnessIncreasing", "ContrastIncreasing")
BLEND_OPS = ("ColorIncreasing", "SharpnessIncreasing")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
SEQUENCE = (None, *BANK_OPS, *LINEAR_OPS, "Equalize", *BLEND_OPS, *GEOMETRIC)
"""The order a layer sorts its images in (None: no op)."""

BANK = {  # name: (scale, cap, table at integer level k)
    "PosterizeIncreasing": (4, 4, lambda v, k: torch.floor(v / 2 ** (4 + k)) * 2 ** (4 + k)),
    "SolarizeIncreasing": (256, 256, lambda v, k: torch.where(v >= 256 - k, 255 - v, v)),
    "SolarizeAdd": (110, 128, lambda v, k: torch.where(v < 128, (v + k).clamp(max=255), v))}
"""The tables that depend on the magnitude only, at level ``k = int(m / 10 * scale)`` (at most
``cap``): posterize drops ``k`` of its 4 bits, solarize's threshold drops by ``k``,
solarize-add adds ``k``."""


def _bank_layout() -> dict[str, tuple[int, int, int]]:
    """Per table op: its first row in the bank (row 0: the identity), level scale and cap."""
    layout, rows = {"Invert": (1, 0, 0)}, 2
    for name, (scale, cap, _) in BANK.items():
        layout[name] = (rows, scale, cap)
        rows += cap + 1
    return layout


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """Per device, once: the values 0-255 and the table bank (:func:`_bank_layout`)."""
    v = torch.arange(256.0, device=device)
    rows = [v, 255 - v] + [table(v, level) for _, cap, table in BANK.values()
                           for level in range(cap + 1)]
    return {"v": v, "bank": torch.stack(rows)}


SCALE, CAP, BASE, RANK, SLOPE = 0, 1, 2, 3, slice(4, 10)
"""The columns of :func:`_per_op`."""


@functools.lru_cache(maxsize=8)
def _per_op(device: torch.device, h: int, w: int) -> torch.Tensor:
    """Per device and size, once: a row per op (shifted by one: row 0 is "none") with its level
    scale, cap and first row in the bank, its place in :data:`SEQUENCE`, and the change of its
    geometric map per unit of level (:func:`geometric_thetas`)."""
    table = torch.zeros(len(OPS) + 1, 10)
    for name, (base, scale, cap) in _bank_layout().items():
        table[OPS.index(name) + 1, [SCALE, CAP, BASE]] = torch.tensor([scale, cap, base * 1.0])
    table[:, RANK] = torch.tensor([SEQUENCE.index(name) * 1.0 for name in (None, *OPS)])
    slope = table[:, SLOPE]
    slope[OPS.index("ShearX") + 1, 1:3] = 0.3 * h / w
    slope[OPS.index("ShearY") + 1, 3:6:2] = 0.3 * w / h
    slope[OPS.index("TranslateXRel") + 1, 2] = slope[OPS.index("TranslateYRel") + 1, 5] = 0.9
    return table.to(device)


@functools.lru_cache(maxsize=8)
def _geometry(device: torch.device, h: int, w: int) -> dict[str, torch.Tensor]:
    """Per device and size, once: the pixel centres in normalised coordinates, and the rows of
    :func:`geometric_thetas` (the identity, the rotation's off-diagonal)."""
    return {"u": ((torch.arange(w, device=device) + 0.5) * 2 / w - 1).view(1, 1, w, 1),
            "v": ((torch.arange(h, device=device) + 0.5) * 2 / h - 1).view(1, h, 1, 1),
            "identity": torch.tensor([1.0, 0, 0, 0, 1, 0], device=device),
            "turn": torch.tensor([0.0, h / w, 0, -w / h, 0, 0], device=device)}


def op_params(op: torch.Tensor, m: torch.Tensor, sign: torch.Tensor,
              size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image's place in :data:`SEQUENCE` and what its op needs, for any number of
    images and layers at once: (..., 9) with the op, the blend factor, the bank's
    table row and the geometric map (:func:`geometric_thetas`)."""
    t = _per_op(m.device, *size).index_select(0, op.flatten() + 1).view(*op.shape, -1)
    level = torch.minimum(torch.floor(m / LEVEL * t[..., SCALE]), t[..., CAP])
    signed = sign * m / LEVEL
    params = torch.cat([torch.stack([op.to(m.dtype), _factor(signed), t[..., BASE] + level], -1),
                        geometric_thetas(size, op, signed, t[..., SLOPE])], -1)
    return t[..., RANK].long(), params


OP, FACTOR, ROW, THETA = 0, 1, 2, slice(3, 9)
"""The columns of :func:`op_params`."""


class Sorted:
    """A batch sorted by op (:data:`SEQUENCE`): ``x`` (a float copy) and the ops' ``params``
    in that order, ``order`` the images' places in the batch, and each op's slice."""

    def __init__(self, x: torch.Tensor, key: torch.Tensor, params: torch.Tensor) -> None:
        self.order = torch.argsort(key, stable=True)
        counts = torch.bincount(key, minlength=len(SEQUENCE)).tolist()  # the one host sync
        self.starts = [0, *itertools.accumulate(counts)]
        self.x = x.index_select(0, self.order).to(torch.float32)
        self.params = params.index_select(0, self.order)

    def span(self, first: str, last: str | None = None) -> slice:
        """The slice of the ops from ``first`` to ``last`` in :data:`SEQUENCE` (or ``first``)."""
        return slice(self.starts[SEQUENCE.index(first)],
                     self.starts[SEQUENCE.index(last or first) + 1])


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` (ITU-R 601-2, rounded); a grey image stays as it is."""
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def _factor(signed: torch.Tensor) -> torch.Tensor:
    """The increasing blends' factor, ``max(0.1, 1 +- 0.9 m / 10)`` (``signed``: +-m / 10)."""
    return (1.0 + signed * 0.9).clamp(min=0.1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor,
           shift: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)`` on 8-bit images: truncated, clipped
    (``degenerate + factor * (x - shift)``, ``shift`` the degenerate unless given), into
    ``out`` where given."""
    shift = degenerate if shift is None else shift
    return torch.trunc((degenerate + factor * (x - shift)).clamp_(0, 255), out=out)


def _equalize_lut(flat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` table for every image and channel: (n, C, 256). PIL leaves
    out the pixels of the highest value present; when the rest are under 255 pixels (one value
    only, say) the table is the identity."""
    hist = torch.zeros(*flat.shape[:2], 256, device=flat.device).scatter_add_(
        2, flat, torch.ones_like(flat, dtype=torch.float32))
    last = hist.gather(2, flat.amax(2, keepdim=True))
    step = torch.floor((flat.shape[2] - last) / 255)
    before = hist.cumsum(2) - hist  # pixels below each value
    lut = torch.floor((torch.floor(step / 2) + before) / step.clamp(min=1)).clamp_(max=255)
    return torch.where(step == 0, v, lut)


def _linear_luts(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Autocontrast, brightness and contrast: ``p + q (v - r)``, truncated and clipped, per
    image and channel (n, C, 256): a stretch of [lo, hi] to [0, 255] (p = 0, r = lo; the
    identity where lo = hi), PIL's blend with black (p = r = 0) or with the grey image's mean
    (p = r = mean), q the stretch or the blend factor."""
    n, c = x.shape[:2]
    lo, hi = x.amin(dim=(2, 3)).view(n, c, 1), x.amax(dim=(2, 3)).view(n, c, 1)
    op = params[:, OP].view(n, 1, 1)
    auto = op == OPS.index("AutoContrast")
    stretch = auto & (hi > lo)
    p = torch.floor(_gray(x).mean(dim=(1, 2, 3)).view(n, 1, 1) + 0.5) * (
        op == OPS.index("ContrastIncreasing"))
    factor = params[:, FACTOR].view(n, 1, 1).masked_fill(auto, 1.0)
    q = torch.where(stretch, 255.0 / (hi - lo).clamp(min=1), factor)
    return _blend(p, _constants(x.device)["v"], q, torch.where(stretch, lo, p))


def tables_(s: Sorted) -> None:
    """The ops that map each value to a value, in place in ``s.x``: each image's table (the
    bank's, linear, equalize's; in that order in the sorted batch), one lookup for them all."""
    whole = s.span(BANK_OPS[0], "Equalize")
    if whole.start == whole.stop:
        return
    sub = s.x[whole]
    n, c, h, w = sub.shape
    flat = sub.reshape(n, c, h * w).long()
    parts = []
    bank, linear = s.span(BANK_OPS[0], BANK_OPS[-1]), s.span(LINEAR_OPS[0], LINEAR_OPS[-1])
    if bank.stop > bank.start:
        rows = _constants(sub.device)["bank"].index_select(0, s.params[bank, ROW].long())
        parts.append(rows.unsqueeze(1).expand(-1, c, -1))
    if linear.stop > linear.start:
        parts.append(_linear_luts(s.x[linear], s.params[linear]))
    equalize = s.span("Equalize")
    if equalize.stop > equalize.start:
        parts.append(_equalize_lut(flat[equalize.start - whole.start:],
                                   _constants(sub.device)["v"]))
    lut = parts[0] if len(parts) == 1 else torch.cat(parts)
    torch.gather(lut, 2, flat, out=sub.view(n, c, h * w))


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3x3, centre 5, the rest 1, over 13, rounded; borders kept), from
    row and column sums of whole values (exact in float)."""
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    out = x.clone()
    out[..., 1:-1, 1:-1] = torch.floor((box + 4 * x[..., 1:-1, 1:-1]) / 13 + 0.5)
    return out


def blends_(s: Sorted) -> None:
    """Colour and sharpness, in place in ``s.x``: PIL's ImageEnhance blend with the grey image
    (colour) or the SMOOTH-filtered image (sharpness), one blend for both."""
    whole = s.span(BLEND_OPS[0], BLEND_OPS[-1])
    if whole.start == whole.stop:
        return
    colour, sharp = s.x[s.span(BLEND_OPS[0])], s.x[s.span(BLEND_OPS[1])]
    degenerate = torch.cat([_gray(colour).expand_as(colour), _smooth(sharp)])
    sub = s.x[whole]
    _blend(degenerate, sub, s.params[whole, FACTOR].view(-1, 1, 1, 1), out=sub)


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE)`` in normalised coordinates (-1 and 1: the image's outer
    edges, pixel centres inside): output point (u, v) takes the input at ``theta @ (u, v, 1)``,
    resampled bicubically; outside the image (a hard edge, as PIL), the fill colour. Into
    ``out`` where given (``x`` itself may be)."""
    n, _, h, w = x.shape
    g = _geometry(x.device, h, w)
    u, v, one = theta.transpose(1, 2).reshape(n, 3, 1, 1, 2).unbind(1)  # each (n, 1, 1, 2)
    grid = torch.addcmul(torch.addcmul(one, u, g["u"]), v, g["v"])  # (n, h, w, 2)
    sampled = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    within = grid.abs().le_(1)  # 1.0 where inside, per coordinate (cheaper than a bool mask)
    inside = (within[..., 0] * within[..., 1]).unsqueeze(1)
    return torch.lerp(fill.view(1, -1, 1, 1), sampled.round_().clamp_(0, 255), inside, out=out)


def geometric_thetas(size: tuple[int, int], op: torch.Tensor, level: torch.Tensor,
                     slope: torch.Tensor) -> torch.Tensor:
    """Per image, its geometric op's map from output to input point in normalised coordinates
    (..., 6; the identity for the other ops) for images of ``size`` (h, w). PIL's pixel maps
    as timm sets them, with ``l = level = sign * m / 10``: rotate ``x' = cos (x - w/2)
    + sin (y - h/2) + w/2`` (and ``y'`` alike; an angle of ``-30 l`` degrees turns the image
    counter-clockwise), shear ``x' = x + 0.3 l y`` (or y), translate ``x' = x + 0.45 l w``
    (or y); with ``x = (u + 1) w / 2`` these become rows of ``cos A + sin B + l slope[op]``
    (A the identity, B the rotation's off-diagonal; ``slope``: each image's op's row of
    :func:`_per_op`)."""
    g = _geometry(level.device, *size)
    angle = torch.deg2rad(level * -30) * (op == OPS.index("Rotate"))
    return (torch.cos(angle).unsqueeze(-1) * g["identity"]
            + torch.sin(angle).unsqueeze(-1) * g["turn"] + level.unsqueeze(-1) * slope)


def apply_ops_(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor, sign: torch.Tensor,
               fill: torch.Tensor) -> torch.Tensor:
    """Every image's op (``op`` = -1: none) at magnitude ``m`` with ``sign``, in place in the
    float batch ``x``."""
    s = Sorted(x, *op_params(op, m, sign, x.shape[-2:]))
    run_ops_(s, fill)
    return x.index_copy_(0, s.order, s.x)


def run_ops_(s: Sorted, fill: torch.Tensor) -> None:
    """Every image's op, in place in the sorted batch: each kind of op once, on its slice."""
    tables_(s)
    blends_(s)
    geometric = s.span(GEOMETRIC[0], GEOMETRIC[-1])
    if geometric.stop > geometric.start:
        sub = s.x[geometric]
        _affine(sub, s.params[geometric, THETA].view(-1, 2, 3), fill, out=sub)


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

    def _fill(self, x: torch.Tensor) -> torch.Tensor:
        if self.fill.device != x.device or len(self.fill) != x.shape[1]:
            self.fill = self.fill.to(x.device).expand(x.shape[1])
        return self.fill

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or whole-valued float) images -> a new float batch of whole values 0-255.
        Each layer sorts the batch as the last left it; the images go back to their places
        once, at the end."""
        draw = self.draw(len(images), images.device)
        op = torch.where(draw.applied, draw.op, -1)
        key, params = op_params(op, draw.magnitude, draw.sign, images.shape[-2:])  # all layers
        x, order = images, None  # order: where x's images are in the batch (None: in place)
        for layer in range(self.num_ops):
            k, p = key[layer], params[layer]
            if order is not None:
                k, p = k.index_select(0, order), p.index_select(0, order)
            s = Sorted(x, k, p)
            run_ops_(s, self._fill(images))
            x, order = s.x, s.order if order is None else order[s.order]
        if order is None:  # no layers
            return images.to(torch.float32, copy=True)
        return x.index_select(0, torch.argsort(order))  # faster than index_copy_ here


def random_erasing(x: torch.Tensor, prob: float, mode: str = "pixel", scale=(0.02, 1 / 3),
                   ratio=(0.3, 3.3), attempts: int = 10, inplace: bool = False) -> torch.Tensor:
    """timm's ``RandomErasing`` on a normalised batch: with probability ``prob`` an image gets
    one rectangle (area ``scale``, aspect ``ratio``; the first of ``attempts`` draws that fits)
    of per-pixel N(0, 1) noise (``mode="pixel"``), one N(0, 1) colour per channel (``rand``)
    or zeros (``const``). ``inplace``: into ``x`` itself."""
    n, c, h, w = x.shape
    dev = x.device
    r = torch.rand(n, 2 * attempts + 3, device=dev)  # every draw at once
    area = r[:, :attempts] * (h * w * (scale[1] - scale[0])) + h * w * scale[0]
    log_ratio = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(r[:, attempts:-3] * (log_ratio[1] - log_ratio[0]) + log_ratio[0])
    size = torch.stack([area * aspect, area / aspect]).sqrt_().round_()  # (2, n, attempts)
    limit = torch.tensor([h, w], device=dev, dtype=size.dtype).view(2, 1, 1)  # height, width
    fits = (size < limit).all(0)
    first = fits.to(torch.uint8).argmax(1).view(1, n, 1).expand(2, n, 1)
    box = size.gather(2, first)  # (2, n, 1): the first draw that fits
    corner = torch.floor(r[:, -2:].T.unsqueeze(2) * (limit + 1 - box))  # top, left
    chosen = ((r[:, -3] < prob) & fits.any(1)).nonzero().flatten()  # only the erased images
    offset = torch.arange(max(h, w), device=dev) - corner.index_select(1, chosen)  # (2, k, h|w)
    within = (offset >= 0) & (offset < box.index_select(1, chosen))
    k = len(chosen)
    inside = within[0, :, :h].view(k, 1, h, 1) & within[1, :, :w].view(k, 1, 1, w)
    out = x if inplace else x.clone()
    sub = out.index_select(0, chosen)
    if mode == "pixel":  # noise drawn for the boxes' pixels only
        box = inside.expand_as(sub)
        sub.masked_scatter_(box, torch.randn(int(box.sum()), device=dev))
    else:
        sub = torch.where(inside, torch.randn(k, c, 1, 1, device=dev) if mode == "rand" else 0.0,
                          sub)
    return out.index_copy_(0, chosen, sub)
