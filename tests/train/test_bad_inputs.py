"""Every bad input of the reliability issue, typed as a user types it: one line saying what is
wrong and the fix, exit code 2, the key or file named, no checkpoint written, nothing of the
run directory's earlier files changed."""

import json
from pathlib import Path

import pytest
import torch

from tests.cli import run_main
from tests.fakes import idx_bytes, write_fashion

BASE = {"step": "resnet50", "preset": "smoke", "logger": "none"}

VALUES = [  # (overrides, what the line names)
    ("recipe.grad_clip=-1", "recipe.grad_clip=-1"), ("recipe.gamma=-1", "recipe.gamma=-1"),
    ("recipe.momentum=5", "recipe.momentum=5"), ("recipe.weight_decay=-1", "recipe.weight_decay"),
    ("recipe.warmup_epochs=-5", "recipe.warmup_epochs"), ("recipe.mixup_alpha=-1", "mixup_alpha"),
    ("recipe.cutmix_alpha=-1", "recipe.cutmix_alpha"), ("recipe.mix_prob=2", "recipe.mix_prob"),
    ("recipe.randaugment_magnitude=100", "recipe.randaugment_magnitude"),
    ("recipe.lr_batch=0", "recipe.lr_batch"), ("recipe.milestones=[abc]", "recipe.milestones"),
    ("recipe.ema_decay=2", "recipe.ema_decay=2"), ("recipe.betas=[a,b]", "recipe.betas"),
    ("model.width=0", "model.width=0"), ("model.depths=[0,0,0,0]", "model.depths=[0,0,0,0]"),
    ("data.std=[0,0,0]", "data.std"), ("data.padding=1000", "data.padding=1000"),
    ("lr=nan", "lr=nan"), ("lr=inf", "lr=inf"), ("scale.width=inf", "scale.width=inf"),
    ("scale.width=nan", "scale.width=nan"), ("threads=0", "threads=0"),
    ("+foo=1", "foo is not a key"), ("epoch=3", "epoch is not a key"),
    ("step=nope", "step=nope is invalid; valid values: depthwise,"),
    ("preset=nope", "preset=nope is invalid; valid values: cifar10, cpu, imagenet, smoke"),
    ("data=nope", "data=nope is invalid; valid values: cifar10, cifar100, fashion_mnist, "
                  "imagefolder, synthetic"),
    ("ladder=nope", "ladder=nope is invalid; valid values: resnet200, resnet50"),
]


def fashion_root(tmp_path: Path, **arrays) -> list[str]:
    write_fashion(tmp_path / "data", **arrays)
    return ["data=fashion_mnist", f"data.root={tmp_path / 'data'}", "data.download=false",
            "data.val_size=0", "data.train_images=null"]


def bad_header(tmp_path):
    args = fashion_root(tmp_path)
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    (tmp_path / "data" / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "data" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images, (10, 14, 56)))
    return args


def partial_root(tmp_path):
    args = fashion_root(tmp_path)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    return args


def lock_directory(tmp_path):
    (tmp_path / "run" / ".lock").mkdir(parents=True)
    return []


def config_file(text: str):
    def make(tmp_path):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.json").write_text(text)
        (tmp_path / "run" / "last.pt").write_bytes(b"a checkpoint")
        return []
    return make


SETUPS = [  # (what makes the input bad, what the line names)
    (bad_header, "t10k-images-idx3-ubyte announces 14x56 images, not Fashion-MNIST's 28x28"),
    (lambda t: fashion_root(t, train_labels=torch.arange(10, dtype=torch.uint8)),
     "train-labels-idx1-ubyte.gz holds 10 labels for the 20 images"),
    (lambda t: fashion_root(t, train_labels=torch.full((20,), 200, dtype=torch.uint8)),
     "train-labels-idx1-ubyte.gz holds label 200"),
    (partial_root, "but not t10k-labels-idx1-ubyte"),
    (lambda t: [*fashion_root(t), "data.image_size=16"], "data.image_size=16 is smaller than"),
    (lock_directory, ".lock cannot be opened as the run's lock (IsADirectoryError"),
    (config_file("[]"), "config.json holds list, not a config; remove"),
    (config_file('{"seed": 0'), "config.json is unreadable (JSONDecodeError: Expecting"),
]


def check_one_line(tmp_path: Path, args: list[str], named: str) -> None:
    base = {k: v for k, v in BASE.items() if not any(a.startswith(k + "=") for a in args)}
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} if run.exists() else {}
    code, stderr = run_main(*[f"{k}={v}" for k, v in base.items()], *args,
                            f"hydra.run.dir={run}")
    assert code == 2, stderr[-2000:]
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr
    assert named in stderr
    assert not (run / "epochs.jsonl").exists() and (run / "last.pt").exists() == (
        run / "last.pt" in before)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} if run.exists() else {}
    assert {p: b for p, b in after.items() if p in before} == before
    record = run / "metrics.json"
    if record.exists() and record not in before:
        assert json.loads(record.read_text())["status"] == "failed"


@pytest.mark.parametrize("override,named", VALUES)
def test_a_bad_value_is_one_line_before_any_work(tmp_path, override, named):
    check_one_line(tmp_path, [override], named)


@pytest.mark.parametrize("make,named", SETUPS)
def test_bad_data_or_run_files_are_one_line_before_any_work(tmp_path, make, named):
    check_one_line(tmp_path, make(tmp_path), named)


@pytest.mark.parametrize("override,message", [
    ("recipe.momentm=0.5", "recipe.momentm is not a key of the config (did you mean "
                           "recipe.momentum?)"),
    ("data.padd=1", "data.padd is not a key of the config (did you mean data.padding?)"),
    ("+seeds=1", "seeds is not a key of the config (did you mean seed?)"),
])
def test_a_misspelt_key_names_the_key_it_is_close_to(tmp_path, override, message):
    check_one_line(tmp_path, [override], message)
