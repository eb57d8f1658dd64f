"""Each piece of the recipes does what it should."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from roadmap.conf import compose
from roadmap.models import build_model, convnext_config, resnet_config
from roadmap.train.augment import (
    BatchAugment,
    random_pad_crop_flip,
    random_resized_crop,
)
from roadmap.train.optim import Schedule, build_optimizer, param_groups


def recipe(name="convnext", **changes):
    cfg = compose(["step=recipe" if name == "convnext" else "step=resnet50", "preset=smoke"])
    r = OmegaConf.to_container(cfg.recipe, resolve=True)
    r.update(changes)
    return OmegaConf.create(r), cfg.data


def batch(n=32, c=3, size=32):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8), torch.arange(n) % 10


def test_mixup_and_cutmix_give_soft_targets():
    r, data = recipe(randaugment=False, random_erasing=0.0)
    x, y = BatchAugment(data, r, 10)(*batch())
    assert x.dtype == torch.float32 and y.shape == (32, 10)
    torch.testing.assert_close(y.sum(1), torch.ones(32))
    assert (y.max(1).values < 1).any()  # mixed, not one-hot


def test_mixing_an_odd_batch_fails_at_start_with_one_line():
    from roadmap.train.data import make_synthetic
    from roadmap.train.loaders import MemoryTrainLoader

    r, data = recipe(randaugment=False, random_erasing=0.0)
    dataset = make_synthetic(OmegaConf.merge(data, {"train_size": 40, "test_size": 10}))
    with pytest.raises(ValueError, match="needs an even batch"):
        MemoryTrainLoader(dataset, 5, BatchAugment(data, r, 10), torch.device("cpu"))


def test_no_mixing_keeps_class_indices():
    r, data = recipe("original")
    x, y = BatchAugment(data, r, 10)(*batch())
    assert y.dtype == torch.int64 and torch.equal(y, torch.arange(32) % 10)


def test_cutmix_pastes_a_box_and_mixes_by_its_area():
    r, data = recipe(randaugment=False, random_erasing=0.0, mixup_alpha=0.0, hflip=False)
    OmegaConf.update(data, "crop", "none")
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    images[1::2] = 255  # alternate black and white images: the rolled batch pairs them
    torch.manual_seed(3)
    x, y = BatchAugment(data, r, 10)(images, torch.arange(8))
    white = (x[0] > 0).float().mean().item()  # share of image 0 pasted from a white image
    assert y[0, 0].item() == pytest.approx(1 - white, abs=1e-6)


def test_random_erasing_changes_a_quarter_of_the_images():
    r, data = recipe(randaugment=False, mixup_alpha=0.0, cutmix_alpha=0.0, hflip=False)
    OmegaConf.update(data, "crop", "none")
    images = torch.full((400, 3, 32, 32), 128, dtype=torch.uint8)
    x, _ = BatchAugment(data, r, 10)(images, torch.zeros(400, dtype=torch.long))
    changed = (x != x[0, 0, 0, 0]).flatten(1).any(1).float().mean().item()
    assert 0.18 < changed < 0.32


def test_batched_crops_move_each_image_on_its_own():
    torch.manual_seed(0)
    x = torch.arange(1, 2 * 12 * 16 + 1.0).view(1, 2, 12, 16).repeat(800, 1, 1, 1)
    out = random_pad_crop_flip(x, 4, flip=True)
    padded = torch.nn.functional.pad(x[0], (4,) * 4)
    crops = {(oy, ox, flip): padded[:, oy:oy + 12, ox:ox + 16].flip(-1) if flip
             else padded[:, oy:oy + 12, ox:ox + 16]
             for oy in range(9) for ox in range(9) for flip in (False, True)}
    seen = []
    for image in out:  # every output is one crop of the zero-padded image, mirrored or not
        seen.append(next(k for k, crop in crops.items() if torch.equal(image, crop)))
    assert len(set(seen)) > 140  # of 162: every offset and both orientations turn up
    assert 0.45 < sum(flip for *_, flip in seen) / len(seen) < 0.55
    assert torch.equal(random_pad_crop_flip(x, 0, flip=False), x)
    resized = random_resized_crop(x, 8)
    assert resized.shape == (800, 2, 8, 8) and not torch.allclose(resized[0], resized[1])


def test_no_weight_decay_on_one_dimensional_parameters():
    model = build_model(convnext_config(depths=(1, 1), width=8, layer_scale_init=1e-6))
    decay, no_decay = param_groups(model, 0.05, exclude_1d=True)
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 and not names[id(p)].endswith("layer_scale") for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("layer_scale") for n in no_decay_names)
    assert any(n.endswith("norm1.weight") for n in no_decay_names)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    everything = param_groups(build_model(resnet_config()), 1e-4, exclude_1d=False)
    assert len(everything) == 1


def test_optimizers():
    model = build_model(resnet_config(depths=(1, 1, 1, 1), width=8))
    r, _ = recipe("original")
    assert isinstance(build_optimizer(model, r, 0.1), torch.optim.SGD)
    r, _ = recipe("convnext")
    opt = build_optimizer(model, r, 4e-3)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)


def test_cosine_schedule_warms_up_then_ends_at_min_lr():
    r, _ = recipe("convnext")  # 20 warm-up epochs of 300, min lr 1e-6
    lr, steps = 4e-3, 100
    s = Schedule(r, epochs=30, steps_per_epoch=steps, base_lr=lr)
    assert s.warmup == 2 * steps  # 20/300 of a 30-epoch run
    assert s(0) == pytest.approx(1 / 200) and s(199) == pytest.approx(1.0)
    assert s(200) == pytest.approx(1.0)
    assert lr * s(30 * steps - 1) == pytest.approx(1e-6)
    mid = 200 + (3000 - 200 - 1) / 2
    assert s(int(mid)) == pytest.approx(0.5, abs=0.01)
    values = [s(i) for i in range(200, 3000)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_step_schedule_decays_at_the_scaled_milestones():
    r, _ = recipe("original")  # x0.1 at epochs 30 and 60 of 90
    s = Schedule(r, epochs=9, steps_per_epoch=10, base_lr=0.1)
    assert [s(i) for i in (0, 29, 30, 59, 60, 89)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Label-smoothed cross-entropy written out: (1 - eps) x CE + eps x mean over classes of
    -log p; targets are class indices or class probabilities."""
    logp = logits.log_softmax(1)
    if targets.dim() == 1:
        targets = torch.nn.functional.one_hot(targets, logits.shape[1]).float()
    return ((1 - eps) * -(targets * logp).sum(1) - eps * logp.mean(1)).mean()


@pytest.mark.parametrize("targets", ["hard", "mixed"])
def test_the_training_step_computes_the_smoothed_loss(tmp_path, targets):
    """The loss the training loop computes (through the run's own Stepper) is label-smoothed
    cross-entropy with the recipe's 0.1, for class indices and for Mixup's mixed targets."""
    from roadmap.conf import settings
    from roadmap.runtime import Dist
    from roadmap.train.setup import prepare

    cfg = settings(compose(["step=recipe", "preset=smoke", "logger=none"]))
    assert cfg.recipe.label_smoothing == 0.1
    run = prepare(cfg, Dist())
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 3, 5, 9])
    if targets == "mixed":
        y = 0.7 * torch.nn.functional.one_hot(y, 10).float() + 0.3 * torch.full((4, 10), 0.1)
    run.model.eval()  # no stochastic depth: the same logits twice
    with torch.no_grad():
        torch.nn.init.normal_(run.model.head.fc.bias, std=5.0)  # far from uniform predictions
        logits = run.model(x)
    loss = run.stepper.forward_backward(x, y)
    assert loss.item() == pytest.approx(smoothed_ce(logits, y, 0.1).item(), rel=1e-5)
    assert abs(loss.item() - smoothed_ce(logits, y, 0.0).item()) > 0.01  # smoothing is on
    assert compose(["step=resnet50", "preset=smoke"]).recipe.label_smoothing == 0.0


def test_presets_and_recipes_compose():
    cpu = compose(["step=gelu"])  # the default preset
    assert cpu.preset_name == "cpu" and cpu.data.name == "fashion_mnist" and cpu.epochs == 2
    assert cpu.lr == 4e-3 and cpu.recipe.name == "convnext" and not cpu.recipe.randaugment
    assert compose(["step=resnet50"]).lr is None  # the original recipe's linear rule
    imagenet = compose(["step=gelu", "preset=imagenet", "data.root=/x"])
    assert imagenet.epochs == 300 and imagenet.total_batch == 4096
    assert imagenet.data.image_size == 224 and imagenet.recipe.randaugment
    assert compose(["step=resnet50", "preset=imagenet"]).epochs == 90
    assert compose(["step=gelu", "preset=cifar10"]).lr == 2e-3
    assert math.isclose(compose(["step=gelu", "preset=smoke"]).scale.width, 0.125)


def chunked_batches(chunk: int, r, data, n: int = 60, batch_size: int = 10):
    from roadmap.train.data import make_synthetic
    from roadmap.train.loaders import MemoryTrainLoader

    dataset = make_synthetic(OmegaConf.merge(data, {"train_size": n, "test_size": 10}))
    loader = MemoryTrainLoader(dataset, batch_size, BatchAugment(data, r, 10),
                               torch.device("cpu"), chunk=chunk)
    return list(loader.epoch(5)), dataset


@pytest.mark.parametrize("chunk", [2, 4])
def test_augmenting_several_batches_at_once_gives_the_same_batches(chunk):
    """With nothing random, augmenting ``chunk`` batches per call yields what one at a time
    does (the last chunk of 6 batches short when 4 do not divide them)."""
    r, data = recipe(randaugment=False, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
                     hflip=False)
    OmegaConf.update(data, "crop", "none")
    one, _ = chunked_batches(1, r, data)
    many, _ = chunked_batches(chunk, r, data)
    assert len(many) == len(one) == 6
    for (x1, y1), (x2, y2) in zip(one, many, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_the_cpu_presets_flips_do_not_depend_on_the_chunk():
    """The cpu protocol augments by flipping only (padding 0): each image draws one number in
    order, so any ``augment_batches`` gives the same batches and the committed cpu-preset
    results stay reproducible."""
    r, data = recipe("original")
    OmegaConf.update(data, "padding", 0)
    batches = {}
    for chunk in (1, 4):
        torch.manual_seed(0)
        batches[chunk] = chunked_batches(chunk, r, data)[0]
    unflipped = chunked_batches(1, recipe("original", hflip=False)[0], data)[0]
    flipped = torch.cat([x for x, _ in batches[1]]) != torch.cat([x for x, _ in unflipped])
    assert 0.3 < flipped.flatten(1).any(1).float().mean() < 0.7  # about half the images
    for (x1, y1), (x4, y4) in zip(batches[1], batches[4], strict=True):
        assert torch.equal(x1, x4) and torch.equal(y1, y4)


def test_chunked_batches_are_mixed_within_their_own_batch():
    """Mixup/CutMix pairs each image with its batch's reverse, also when the loader augments
    three batches at once: every soft target mixes the labels of its own batch only."""
    r, data = recipe(randaugment=False, random_erasing=0.0, hflip=False)
    plain = recipe(randaugment=False, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
                   hflip=False)[0]
    torch.manual_seed(0)
    labels = [y for _, y in chunked_batches(1, plain, data)[0]]
    torch.manual_seed(0)
    mixed, _ = chunked_batches(3, r, data)
    for (_, soft), hard in zip(mixed, labels, strict=True):
        onehot = torch.nn.functional.one_hot(hard, 10).float()
        i = int((hard != hard.flip(0)).nonzero()[0])  # an image whose partner differs
        lam = soft[i, hard[i]].item()
        torch.testing.assert_close(soft, lam * onehot + (1 - lam) * onehot.flip(0))


def test_chunked_loaders_on_two_processes_see_every_image_once():
    from roadmap.train.augment import Normalize
    from roadmap.train.data import make_synthetic
    from roadmap.train.loaders import MemoryTrainLoader

    r, data = recipe(randaugment=False, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
                     hflip=False)
    OmegaConf.update(data, "crop", "none")
    dataset = make_synthetic(OmegaConf.merge(data, {"train_size": 60, "test_size": 10}))
    seen = [x for rank in range(2) for x, _ in MemoryTrainLoader(
        dataset, 10, BatchAugment(data, r, 10), torch.device("cpu"), rank, 2, chunk=2).epoch(3)]
    assert len(seen) == 6  # 3 batches a process: a chunk of 2, then 1
    every = Normalize(data.mean, data.std)(dataset.train_images).flatten(1)
    assert torch.equal(torch.unique(torch.cat(seen).flatten(1), dim=0),
                       torch.unique(every, dim=0))
    assert len(torch.unique(every, dim=0)) == 60
