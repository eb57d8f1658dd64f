"""Data checked for what it is, before any work: the silent cases of the reliability issue
(an idx header announcing other dimensions, labels short or out of range, a data.root holding
some of the files, an image size smaller than the images) are one line each."""

import pytest
import torch
from omegaconf import OmegaConf

import roadmap.train.archives
from roadmap.conf import compose
from roadmap.train.archives import FASHION_FILES
from roadmap.train.data import DataError, load_dataset
from tests.fakes import idx_bytes, write_cifar, write_fashion


def fashion(root, **changes):
    node = OmegaConf.to_container(compose(["step=gelu", "data=fashion_mnist"]).data)
    node.update(root=str(root), download=False, val_size=0, train_images=None, **changes)
    return OmegaConf.create(node)


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(roadmap.train.archives, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message and "fix" in message
    return message


def test_a_header_announcing_other_dimensions_is_refused(tmp_path):
    """Silent case 1: 14x56 test images (same byte count as 28x28) trained without a word."""
    paths = write_fashion(tmp_path / "fashion_mnist", gz=False)
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    paths["test_images"].write_bytes(idx_bytes(images, (10, 14, 56)))
    with pytest.raises(DataError) as info:
        load_dataset(fashion(tmp_path))
    assert one_line(info).startswith(f"{paths['test_images']} announces 14x56 images, not "
                                     "Fashion-MNIST's 28x28")


@pytest.mark.parametrize("labels,message", [
    (torch.arange(10, dtype=torch.uint8), "holds 10 labels for the 20 images of"),
    (torch.tensor([3] * 19 + [200], dtype=torch.uint8), "holds label 200 (entry 19"),
])
def test_labels_short_or_out_of_range_are_refused(tmp_path, labels, message):
    """Silent case 1: 10 fewer labels than images dropped the extra images; a label of 200
    vanished from the subset or crashed after the model was built."""
    paths = write_fashion(tmp_path / "fashion_mnist", train_labels=labels)
    with pytest.raises(DataError) as info:
        load_dataset(fashion(tmp_path))
    assert one_line(info).startswith(f"{paths['train_labels']} {message}")


def test_the_four_files_directly_in_data_root_are_read_and_identified(tmp_path):
    """Silent case 5: the files in data.root itself were ignored for Debian's copy."""
    paths = write_fashion(tmp_path)
    ds = load_dataset(fashion(tmp_path))
    assert ds.n_train == 20
    files = ds.source["files"]
    assert {k: v["path"] for k, v in files.items()} == {k: str(p) for k, p in paths.items()}
    assert files["train_images"]["bytes"] == paths["train_images"].stat().st_size
    assert len(files["train_images"]["sha256"]) == 64


@pytest.mark.parametrize("place", ["", "fashion_mnist", "FashionMNIST/raw"])
def test_a_partial_set_is_refused_instead_of_falling_back(tmp_path, place):
    """Silent case 5: a data.root holding some of the files fell back to Debian's copy."""
    folder = tmp_path / place
    write_fashion(folder)
    (folder / (FASHION_FILES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError) as info:
        load_dataset(fashion(tmp_path))
    assert one_line(info).startswith(f"{folder} holds t10k-images-idx3-ubyte.gz, "
                                     "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz "
                                     "but not t10k-labels-idx1-ubyte")


def test_nothing_found_names_every_folder_tried(tmp_path, no_debian):
    with pytest.raises(DataError) as info:
        load_dataset(fashion(tmp_path))
    message = one_line(info)
    for folder in (tmp_path, tmp_path / "fashion_mnist", tmp_path / "no-debian"):
        assert str(folder) in message


def test_an_image_size_below_the_images_is_refused_and_above_is_padded(tmp_path):
    """Silent case 3: data.image_size=16 kept 28x28 images while recording 16."""
    write_fashion(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(fashion(tmp_path, image_size=16))
    assert one_line(info) == ("data.image_size=16 is smaller than Fashion-MNIST's 28x28 images: "
                              "in-memory data sets are padded to data.image_size, never shrunk; "
                              "fix: set data.image_size >= 28")
    odd = load_dataset(fashion(tmp_path, image_size=33)).train_images
    assert odd.shape[-2:] == (33, 33)
    assert odd[..., :2, :].max() == 0 and odd[..., -3:, :].max() == 0


def cifar(root, **changes):
    node = OmegaConf.to_container(compose(["step=gelu", "data=cifar10"]).data)
    node.update(root=str(root), download=False, val_size=0, train_images=None, **changes)
    return OmegaConf.create(node)


@pytest.mark.parametrize("kwargs,message", [
    ({"labels": [0] * 9 + [10]}, "holds label 10 (entry 9"),
    ({"labels": [0] * 9}, "holds 9 labels for the 10 images"),
    ({"width": 1024}, "is unreadable as a CIFAR batch (ValueError: its images are [10, 1024]"),
])
def test_cifar_batches_are_checked(tmp_path, kwargs, message):
    folder = write_cifar(tmp_path, **kwargs)
    with pytest.raises(DataError) as info:
        load_dataset(cifar(tmp_path))
    assert one_line(info).startswith(f"{folder / 'data_batch_1'} ")
    assert message in str(info.value)


def test_cifar_is_padded_to_the_image_size_and_identified(tmp_path):
    write_cifar(tmp_path)
    ds = load_dataset(cifar(tmp_path, image_size=40))
    assert ds.train_images.shape == (50, 3, 40, 40)
    assert sorted(ds.source["files"]) == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def test_resize_scales_the_images_before_padding(tmp_path):
    """Amendment 3's geometry: 28x28 -> 56x56 (bilinear) padded to 64x64."""
    write_fashion(tmp_path)
    ds = load_dataset(fashion(tmp_path, image_size=64, resize=2.0))
    assert ds.train_images.shape == (20, 1, 64, 64)
    assert ds.train_images[..., :4, :].max() == 0 and ds.train_images[..., -4:, :].max() == 0
    raw = load_dataset(fashion(tmp_path, image_size=28)).train_images.float()
    want = torch.nn.functional.interpolate(raw, size=(56, 56), mode="bilinear",
                                           align_corners=False).round().clamp(0, 255)
    assert torch.equal(ds.train_images[..., 4:60, 4:60].float(), want)
    with pytest.raises(DataError, match=r"data.image_size=32 is smaller than Fashion-MNIST "
                                        r"\(resized x2\)'s 56x56 images"):
        load_dataset(fashion(tmp_path, image_size=32, resize=2.0))
