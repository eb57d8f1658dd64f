"""Data sets from local files, the batch loaders, and the missing-data error."""


import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import roadmap.train.archives
from roadmap.conf import compose
from roadmap.errors import RunError
from roadmap.train import train
from roadmap.train.data import DEBIAN_FASHION_MNIST, DataError, load_dataset
from roadmap.train.loaders import (
    FolderTrainLoader,
    MemoryEvalLoader,
    MemoryTrainLoader,
    folder_eval_loader,
)
from tests.fakes import write_cifar, write_fashion


def data_cfg(name, **changes):
    root = ["data.root=/x"] if name == "imagefolder" else []
    cfg = compose(["step=gelu", "preset=smoke", f"data={name}", *root])
    node = OmegaConf.to_container(cfg.data)
    node.update(changes)
    return OmegaConf.create(node), cfg.recipe


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="make data installs it")
def test_fashion_mnist_from_debian(tmp_path):
    data, _ = data_cfg("fashion_mnist", root=str(tmp_path), download=False)
    ds = load_dataset(data)
    assert ds.train_images.shape == (55000, 1, 32, 32)  # 5,000 held out for validation
    assert ds.val_images.shape == (5000, 1, 32, 32) and (ds.val_labels.bincount() == 500).all()
    assert ds.test_images.shape == (10000, 1, 32, 32) and ds.train_images.dtype == torch.uint8
    assert set(ds.train_labels.unique().tolist()) == set(range(10))
    assert ds.train_images[:, :, :2].max() == 0  # padded 28 -> 32 with zeros


def test_fashion_mnist_missing_names_every_path_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(roadmap.train.archives, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    data, _ = data_cfg("fashion_mnist", root=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        load_dataset(data)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "no-debian") in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_from_a_local_root(tmp_path):
    write_fashion(tmp_path / "fashion_mnist")
    data, _ = data_cfg("fashion_mnist", root=str(tmp_path), download=False, val_size=0)
    ds = load_dataset(data)
    assert ds.train_images.shape == (20, 1, 32, 32) and ds.test_labels.tolist() == list(range(10))


def test_cifar_from_local_files(tmp_path):
    write_cifar(tmp_path)
    data, _ = data_cfg("cifar10", root=str(tmp_path), download=False, val_size=0)
    ds = load_dataset(data)
    assert ds.train_images.shape == (50, 3, 32, 32) and ds.test_images.shape == (10, 3, 32, 32)


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    data, _ = data_cfg("cifar10", root=str(tmp_path), download=True)
    with pytest.raises(DataError, match="download failed: <urlopen error"):
        load_dataset(data)


def make_folder(root, classes=3, per_class=6):
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                color = (80 * c, 255 - 80 * c, (37 * i) % 256)
                Image.new("RGB", (40 + i, 36), color).save(d / f"{i}.png")


def test_imagefolder_loaders(tmp_path):
    make_folder(tmp_path)
    data, recipe = data_cfg("imagefolder", root=str(tmp_path), num_classes=3, image_size=32)
    ds = load_dataset(data)
    assert ds.num_classes == 3 and len(ds.train) == 18
    loader = FolderTrainLoader(ds, 4, data, recipe, 3, torch.device("cpu"), workers=0)
    x, y = next(iter(loader.epoch(0)))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 3)  # mixed targets
    xs, ys = next(iter(folder_eval_loader(ds.test, 100, data, recipe, 0, rank=0, world=1)))
    assert xs.shape == (18, 3, 32, 32) and ys.tolist() == sorted(ys.tolist())
    data.val_size = 6  # carved from train/, two per class
    ds = load_dataset(data)
    assert len(ds.train) == 12 and len(ds.val) == 6
    assert sorted(ds.train.dataset.targets[i] for i in ds.val.indices) == [0, 0, 1, 1, 2, 2]
    xs, ys = next(iter(folder_eval_loader(ds.val, 100, data, recipe, 0, rank=0, world=1)))
    assert xs.shape == (6, 3, 32, 32)
    data.train_images = 6  # a stratified subset of the 12 left, disjoint from validation
    sub = load_dataset(data)
    picked = [sub.train.dataset.indices[i] for i in sub.train.indices]
    assert sorted(ds.train.dataset.targets[i] for i in picked) == [0, 0, 1, 1, 2, 2]
    assert set(picked).isdisjoint(sub.val.indices)


def test_imagefolder_training_and_class_check(tmp_path):
    make_folder(tmp_path)
    args = ["step=resnet50", "preset=smoke", "logger=none", "data=imagefolder",
            f"data.root={tmp_path}", "data.num_classes=3", "data.image_size=32", "workers=0",
            "batch_size=6", "epochs=1"]
    metrics = train(compose(args), tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["n_train"] == 18
    with pytest.raises(DataError, match="data.num_classes=1000 but the data set has 3 classes"):
        train(compose(args[:-5] + ["workers=0"]), tmp_path / "run2")


def test_memory_loaders_shard_without_overlap():
    data, recipe = data_cfg("synthetic", train_size=100, test_size=30, val_size=0)
    ds = load_dataset(data)
    seen = []
    for rank in range(2):
        loader = MemoryTrainLoader(ds, 10, lambda x, y: (x, y), torch.device("cpu"), rank, 2)
        assert len(loader) == 5
        seen += [y for _, ys in loader.epoch(7) for y in ys.tolist()]
        evals = MemoryEvalLoader(ds.test_images, ds.test_labels, 100, data.mean, data.std,
                                 torch.device("cpu"), rank, 2)
        assert sum(len(y) for _, y in evals) == 15
    assert len(seen) == 100
    first = [ys for _, ys in MemoryTrainLoader(ds, 10, lambda x, y: (x, y), torch.device("cpu"))
             .epoch(1)]
    again = [ys for _, ys in MemoryTrainLoader(ds, 10, lambda x, y: (x, y), torch.device("cpu"))
             .epoch(1)]
    other = [ys for _, ys in MemoryTrainLoader(ds, 10, lambda x, y: (x, y), torch.device("cpu"))
             .epoch(2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_unknown_dataset_name():
    with pytest.raises(RunError, match="data.name=mnist is invalid; valid values: fashion_mnist"):
        compose(["step=resnet50", "preset=smoke", "data.name=mnist"])
