"""Image folders: timm's pipeline for both recipes, and resume with worker processes."""

import json

import pytest
import torch
from PIL import Image

import roadmap.train.run
from roadmap.conf import compose
from roadmap.train import train
from roadmap.train.augment import folder_train_transform, randaugment_spec

DETERMINISTIC = ("top1", "top5", "loss", "train_loss", "params", "gflops", "lr")


def make_folder(root, classes=3, per_class=8):
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (40, 44, 3), generator=g, dtype=torch.uint8)
                pixels[..., c] = 255  # each class its own dominant channel
                Image.fromarray(pixels.numpy()).save(d / f"{i}.jpg")


def args(root, step, *more):
    return [f"step={step}", "preset=smoke", "logger=none", "data=imagefolder",
            f"data.root={root}", "data.num_classes=3", "data.image_size=32", "batch_size=6",
            "eval_batch_size=8", *more]


def test_the_recipes_use_timms_transforms():
    convnext = compose(args("/x", "recipe")).recipe
    assert randaugment_spec(convnext) == "rand-m9-n2-mstd0.5-inc1"
    text = repr(folder_train_transform(compose(args("/x", "recipe")).data, convnext))
    assert "RandAugment" in text and "RandomErasing" in text and "bicubic" in text
    original = compose(args("/x", "resnet50"))
    text = repr(folder_train_transform(original.data, original.recipe))
    assert "RandAugment" not in text and "bilinear" in text and "ColorJitter" not in text


@pytest.mark.parametrize("step", ["resnet50", "recipe"])
def test_a_generated_image_folder_trains_with_both_recipes(tmp_path, step):
    make_folder(tmp_path)
    metrics = train(compose(args(tmp_path, step, "epochs=1", "workers=0")), tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["n_train"] == 24
    assert metrics["recipe"] == ("convnext" if step == "recipe" else "original")


def test_resume_with_worker_processes_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    make_folder(tmp_path)
    cfg = compose(args(tmp_path, "recipe", "epochs=3", "workers=2"))
    reference = train(cfg, tmp_path / "reference")
    log_epoch = roadmap.train.run.log_epoch

    def killed_after_the_first_checkpoint(*a, **k):
        log_epoch(*a, **k)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(roadmap.train.run, "log_epoch", killed_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(roadmap.train.run, "log_epoch", log_epoch)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = train(cfg, tmp_path / "killed")
    for key in DETERMINISTIC:
        assert resumed[key] == reference[key], key
    lines = (tmp_path / "killed" / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
