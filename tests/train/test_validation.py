"""The validation split: stratified, disjoint from train and test, fixed for a seed, checked."""

import json

import pytest
import torch

from roadmap.conf import compose
from roadmap.errors import RunError
from roadmap.train import train
from roadmap.train.data import DataError, load_dataset, stratified_split


def test_the_split_is_stratified_disjoint_and_fixed():
    labels = torch.arange(1000) % 7
    labels[:100] = 3  # unequal classes
    train_idx, val_idx = stratified_split(labels, 150, seed=0)
    assert len(val_idx) == 150 and len(train_idx) == 850
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1000))
    counts, share = labels[val_idx].bincount(), labels.bincount() * 150 / 1000
    assert ((counts - share).abs() < 1).all()  # every class in its share, to one image
    again, _ = stratified_split(labels, 150, seed=0)
    other, other_val = stratified_split(labels, 150, seed=1)
    assert torch.equal(again, train_idx) and not torch.equal(other_val, val_idx)


def test_the_validation_set_comes_from_train_not_test():
    data = compose(["step=resnet50", "preset=smoke"]).data
    full = load_dataset(compose(["step=resnet50", "preset=smoke", "data.val_size=0"]).data)
    ds = load_dataset(data)
    assert len(ds.val_labels) == data.val_size == 100
    assert len(ds.train_labels) + len(ds.val_labels) == len(full.train_labels)
    assert torch.equal(ds.test_images, full.test_images)
    pool = {tuple(x.flatten().tolist()) for x in full.train_images}
    assert all(tuple(x.flatten().tolist()) in pool for x in ds.val_images[:20])
    assert (ds.val_labels.bincount() == 10).all()  # 10 classes, 10 each


def test_a_run_reports_validation_and_test_side_by_side(tmp_path):
    metrics = train(compose(["step=resnet50", "preset=smoke", "logger=none", "epochs=1"]),
                    tmp_path)
    assert 0 <= metrics["val_top1"] <= 100 and 0 <= metrics["top1"] <= 100
    assert metrics["n_train"] == 900 and metrics["commit"] and metrics["torch"]
    record = json.loads((tmp_path / "epochs.jsonl").read_text().splitlines()[-1])
    assert {"val_top1", "val_loss", "top1", "test_loss"} <= set(record)


@pytest.mark.parametrize("override,error,message", [
    ("data.val_size=-1", RunError, "data.val_size=-1 is invalid: must be an integer >= 0"),
    ("data.val_size=1000", DataError, "data.val_size=1000 is invalid for 1000 training images"),
    ("data.val_size=5000", DataError, "data.val_size=5000 is invalid for 1000 training images"),
    ("data.train_images=0", RunError,
     "data.train_images=0 is invalid: must be an integer >= 1, or null"),
    ("data.train_images=900", DataError, "data.train_images=900 is invalid for 900 training "
     "images: must be between 1 and 899, or null for all 900"),
])
def test_a_bad_split_or_subset_fails_before_training(tmp_path, override, error, message):
    with pytest.raises(error, match=message):
        train(compose(["step=resnet50", "preset=smoke", "logger=none", override]), tmp_path)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "epochs.jsonl").exists()


def test_train_images_is_a_fixed_stratified_subset_of_the_rest():
    base = ["step=resnet50", "preset=smoke"]
    rest = load_dataset(compose(base).data)
    data = compose([*base, "data.train_images=300"]).data
    ds, again = load_dataset(data), load_dataset(data)
    assert len(ds.train_labels) == 300 and (ds.train_labels.bincount() == 30).all()
    assert torch.equal(ds.train_images, again.train_images)  # the same for every run
    assert torch.equal(ds.val_images, rest.val_images)       # validation and test untouched
    assert torch.equal(ds.test_images, rest.test_images)
    pool = {tuple(x.flatten().tolist()) for x in rest.train_images}
    assert all(tuple(x.flatten().tolist()) in pool for x in ds.train_images)
