"""The batched RandAugment against timm's (the paper's ``rand-m9-mstd0.5-inc1``): op
frequencies, the share of unchanged images, the magnitudes, and each op's output."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from timm.data import auto_augment

from roadmap.train.randaugment import OPS, BatchRandAugment, apply_ops_, random_erasing

FILL = (125, 123, 114)
HPARAMS = dict(translate_const=14, img_mean=FILL, interpolation=Image.BICUBIC)
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def one_op(name: str):
    """Op ``name`` alone on a batch, through the same code as RandAugment."""
    def run(x, m, sign, fill):
        op = torch.full_like(m, OPS.index(name), dtype=torch.long)
        return apply_ops_(x.clone(), op, m, sign, fill)
    return run


OP_FNS = {name: one_op(name) for name in OPS}


def images(n: int, seed: int = 0, size=(32, 32), channels: int = 3) -> torch.Tensor:
    """Smooth random colour images with some texture (uint8, N x C x H x W)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 6, 6, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic")
    noise = torch.rand(n, channels, *size, generator=g)
    return (smooth.clamp(0, 1) * 220 + noise * 30).clamp(0, 255).round().to(torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    if image.shape[0] == 1:
        return Image.fromarray(image[0].numpy())
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def timm_op(name: str, image: torch.Tensor, magnitude: float, sign: float) -> torch.Tensor:
    """timm's op at a fixed magnitude and sign (its ``random() > 0.5`` negates)."""
    fill = FILL if image.shape[0] == 3 else FILL[0]
    op = auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude,
                                hparams={**HPARAMS, "img_mean": fill})

    class FixedSign:
        def random(self):
            return 0.9 if sign < 0 else 0.1

        def __getattr__(self, attr):
            return getattr(random, attr)

    saved, auto_augment.random = auto_augment.random, FixedSign()
    try:
        out = np.asarray(op(to_pil(image)))
    finally:
        auto_augment.random = saved
    out = torch.from_numpy(out.copy()).float()
    return out[None] if out.ndim == 2 else out.permute(2, 0, 1)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("channels,size", [(3, (32, 32)), (1, (24, 40))],
                         ids=["colour-square", "grey-wide"])
def test_each_op_matches_timms_at_fixed_magnitudes(name, channels, size):
    x = images(12, size=size, channels=channels)
    fill = torch.tensor(FILL[:channels], dtype=torch.float32)
    for magnitude, sign in ((9.0, 1.0), (5.5, -1.0), (10.0, -1.0)):
        ours = OP_FNS[name](x.float(), torch.full((12,), magnitude), torch.full((12,), sign),
                            fill)
        theirs = torch.stack([timm_op(name, image, magnitude, sign) for image in x])
        diff = (ours - theirs).abs()
        if name in GEOMETRIC:  # bicubic kernels differ (torch a=-0.75, PIL a=-0.5)
            assert diff.mean() < 1.5 and diff.max() <= 8, (magnitude, sign)
        else:  # lookup tables and blends: PIL's integer arithmetic
            assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99, (magnitude, sign)


@pytest.mark.parametrize("channels", [3, 1])
def test_a_mixed_batch_gives_each_image_what_its_op_gives_alone(channels):
    """Every op (and none) in one batch, each image with its own magnitude and sign: the
    batched path splits the batch by op and must give each image its own op's output."""
    g = torch.Generator().manual_seed(2)
    op = torch.arange(-1, len(OPS)).repeat(3)
    op = op[torch.randperm(len(op), generator=g)]
    m = torch.rand(len(op), generator=g) * 10
    sign = torch.where(torch.rand(len(op), generator=g) < 0.5, -1.0, 1.0)
    x = images(len(op), seed=3, channels=channels).float()
    fill = torch.tensor(FILL[:channels], dtype=torch.float32)
    mixed = apply_ops_(x.clone(), op, m, sign, fill)
    for i in range(len(op)):
        alone = (x[i:i + 1] if op[i] < 0 else
                 OP_FNS[OPS[op[i]]](x[i:i + 1], m[i:i + 1], sign[i:i + 1], fill))
        assert torch.equal(mixed[i:i + 1], alone), (i, int(op[i]))


class Recorder:
    """Which of timm's ops ran, and with what magnitude (after noise and clipping)."""

    def __init__(self, transform) -> None:
        self.applied, self.magnitudes = [], []
        for op in transform.ops:
            op.aug_fn = self._count(op.name, op.aug_fn)
            if op.level_fn is not None:
                op.level_fn = self._level(op.level_fn)

    def _count(self, name, fn):
        def counted(*args, **kwargs):
            self.applied.append(name)
            return fn(*args, **kwargs)
        return counted

    def _level(self, fn):
        def recorded(magnitude, hparams):
            self.magnitudes.append(magnitude)
            return fn(magnitude, hparams)
        return recorded


N = 3000


@pytest.fixture(scope="module")
def timm_run():
    random.seed(0)
    np.random.seed(0)
    transform = auto_augment.rand_augment_transform("rand-m9-mstd0.5-inc1", HPARAMS)
    recorder = Recorder(transform)
    x = images(N, seed=1)
    out = torch.stack([torch.from_numpy(np.asarray(transform(to_pil(i))).copy()).permute(2, 0, 1)
                       for i in x])
    return x, out, recorder


@pytest.fixture(scope="module")
def our_run():
    torch.manual_seed(0)
    ra = BatchRandAugment(2, 9, 0.5, fill=FILL)
    draws = []
    original = ra.draw

    def recorded(n, device="cpu"):
        draws.append(original(n, device))
        return draws[-1]

    ra.draw = recorded
    x = images(N, seed=1)
    return x, ra(x), draws


def test_op_frequencies_match_timms(timm_run, our_run):
    _, _, recorder = timm_run
    _, _, draws = our_run
    ours = {name: sum(int(((d.op == k) & d.applied).sum()) for d in draws)
            for k, name in enumerate(OPS)}
    theirs = {name: recorder.applied.count(name) for name in OPS}
    expected, sd = 2 * N * 0.5 / 15, (2 * N * 0.5 / 15 * (1 - 0.5 / 15)) ** 0.5
    for name in OPS:  # each op: 2 layers x 1/15 x probability 0.5 of the images, in both
        assert abs(ours[name] - expected) < 4.5 * sd, (name, ours[name])
        assert abs(theirs[name] - expected) < 4.5 * sd, (name, theirs[name])
    assert abs(sum(ours.values()) - sum(theirs.values())) < 0.05 * N


def test_the_share_of_unchanged_images_matches_timms(timm_run, our_run):
    x, theirs, _ = timm_run
    _, ours, _ = our_run
    unchanged_theirs = (theirs == x).flatten(1).all(1).float().mean().item()
    unchanged_ours = (ours == x).flatten(1).all(1).float().mean().item()
    assert 0.22 < unchanged_theirs < 0.34  # both ops skipped: 1/4, plus ops that change nothing
    assert abs(unchanged_ours - unchanged_theirs) < 0.04


def test_the_magnitudes_match_timms(timm_run, our_run):
    _, _, recorder = timm_run
    _, _, draws = our_run
    theirs = np.array(recorder.magnitudes)
    ours = torch.cat([d.magnitude[d.applied] for d in draws]).numpy()
    assert abs(theirs.mean() - 9 + 0.02) < 0.05 and abs(ours.mean() - theirs.mean()) < 0.05
    assert abs(ours.std() - theirs.std()) < 0.05 and ours.max() <= 10 and ours.min() >= 0
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3


def test_random_erasing_erases_one_box_in_the_chosen_images():
    from timm.data.random_erasing import RandomErasing

    torch.manual_seed(0)
    x = torch.zeros(2000, 3, 32, 32)
    out = random_erasing(x, 0.25)
    erased = (out != 0).flatten(1).any(1)
    assert 0.22 < erased.float().mean() < 0.28
    area = (out[erased] != 0).any(1).flatten(1).float().mean(1)
    theirs = RandomErasing(1.0, mode="pixel", device="cpu")(torch.zeros(2000, 3, 32, 32))
    their_area = (theirs != 0).any(1).flatten(1).float().mean(1)
    assert area.min() > 0.01 and area.max() < 0.4  # 2% to 1/3 of the image, sides rounded
    assert stats.ks_2samp(area.numpy(), their_area.numpy()).pvalue > 1e-3
    noise = out[out != 0]
    assert noise.std() == pytest.approx(1.0, abs=0.05)  # pixel mode: N(0, 1) per pixel
    assert noise.mean() == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("mode", ["rand", "const"])
def test_random_erasing_fills_its_box_with_one_colour_per_channel(mode):
    torch.manual_seed(0)
    x = torch.full((200, 3, 32, 32), 5.0)
    out = random_erasing(x, 1.0, mode=mode)
    assert torch.equal(x, torch.full_like(x, 5.0))  # not in place unless asked
    box = (out != 5.0).any(1)  # (n, h, w)
    assert box.flatten(1).any(1).float().mean() > 0.95  # nearly every image: a box fits
    for image, inside in zip(out[:50], box[:50], strict=True):
        colours = image[:, inside]  # (3, pixels in the box)
        assert torch.equal(colours, colours[:, :1].expand_as(colours))
        if mode == "const":
            assert (colours == 0).all()
