"""Data sets read whole from their archives, checked for what they are before any work:
Fashion-MNIST's four idx files and CIFAR's python pickles.

Each reader returns :class:`Arrays`: the images as uint8 ``(N, C, H, W)`` padded to
``data.image_size`` (never shrunk), the labels, and ``source``, which files were read (path,
bytes, SHA-256) for the run's record. Whatever does not match the data set (an idx
header announcing other dimensions, fewer labels than images, a label out of range, a folder
holding some of the files but not all) is one :class:`DataError` line naming the file and the
fix; nothing falls back silently to another copy.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from roadmap.errors import first_line

if TYPE_CHECKING:
    from roadmap.schema import ArchiveDataConfig

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataError(RuntimeError):
    """A data set cannot be found or read, or is not what it should be; the message says
    where it looked, what is wrong and what to do."""


@dataclass
class Arrays:
    """A data set in memory: images ``(N, C, H, W)`` uint8, labels ``(N,)`` int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    source: dict


def file_identity(paths: dict[str, Path]) -> dict:
    """``{name: {path, bytes, sha256}}``: which files a data set was read from."""
    out = {}
    for name, path in paths.items():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        out[name] = {"path": str(path.resolve()), "bytes": path.stat().st_size,
                     "sha256": digest.hexdigest()}
    return out


def padded_to(images: torch.Tensor, size: int, name: str) -> torch.Tensor:
    """``images`` zero-padded (centred) to ``size`` x ``size``; a size smaller than the
    images is refused (in-memory sets are padded, never shrunk)."""
    h, w = images.shape[-2:]
    if size < max(h, w):
        raise DataError(f"data.image_size={size} is smaller than {name}'s {h}x{w} images: "
                        "in-memory data sets are padded to data.image_size, never shrunk; "
                        f"fix: set data.image_size >= {max(h, w)}")
    if size == h == w:
        return images
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(images, (left, size - w - left, top, size - h - top))


def resized(images: torch.Tensor, factor: float, chunk: int = 4096) -> torch.Tensor:
    """uint8 ``images`` scaled by ``factor`` (bilinear, ``align_corners=False``, no
    antialiasing), rounded back to uint8; by chunks, to bound the float copy. 1: unchanged."""
    if factor == 1:
        return images
    h, w = images.shape[-2:]
    size = (round(h * factor), round(w * factor))
    parts = [torch.nn.functional.interpolate(part.float(), size=size, mode="bilinear",
                                             align_corners=False, antialias=False)
             .round_().clamp_(0, 255).to(torch.uint8) for part in images.split(chunk)]
    return torch.cat(parts)


def fitted(images: torch.Tensor, data: ArchiveDataConfig, name: str) -> torch.Tensor:
    """``images`` resized by ``data.resize`` and padded to ``data.image_size``."""
    return padded_to(resized(images, data.resize), data.image_size, name)


def check_labels(labels: torch.Tensor, count: int, num_classes: int, where: str,
                 images: str) -> None:
    """As many labels as images, each in ``[0, num_classes)``."""
    if len(labels) != count:
        raise DataError(f"{where} holds {len(labels)} labels for the {count} images of {images}; "
                        "a data set has one label per image: fix or replace the files")
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{where} holds label {int(labels[i])} (entry {i}, and {len(bad) - 1} "
                        f"more out of range); labels must be 0-{num_classes - 1}: fix or "
                        "replace the file")


# -- Fashion-MNIST ------------------------------------------------------------------------------

FASHION_FILES = {"train_images": "train-images-idx3-ubyte",
                 "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
FASHION_SHAPE = (28, 28)
IDX_MARKS = ("idx1-ubyte", "idx3-ubyte")
REINSTALL = ("reinstall it (`apt-get install --reinstall dataset-fashion-mnist`) or delete it so "
             "that it is looked for elsewhere or downloaded again")


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """An IDX file (MNIST's format), gzipped or not, of ``ndim`` dimensions, as a uint8 tensor
    of its shape; a truncated, garbled or short file is a one-line :class:`DataError`."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        zero, dtype, dims = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08 or dims < 1:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
        body = raw[4 + 4 * dims:]
        if len(body) != math.prod(shape):
            raise ValueError(f"{len(body)} bytes of data where its header announces "
                             f"{math.prod(shape)}")
        if dims != ndim:
            raise ValueError(f"its header announces {dims} dimensions {list(shape)}, not {ndim}")
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"{path} is unreadable ({first_line(exc)}); fix: {REINSTALL}") from None
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dirs(root: Path) -> list[Path]:
    """Where the four files are looked for, in order (Debian's copy only when no folder under
    ``root`` holds any idx file)."""
    return [root, root / "fashion_mnist", root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]


def fashion_mnist_files(root: Path) -> dict[str, Path] | None:
    """The four files, from the first folder of :func:`fashion_mnist_dirs` holding any idx
    file; a folder holding some but not all of them is a :class:`DataError`. None: none."""
    for folder in fashion_mnist_dirs(root):
        try:
            held = sorted(p.name for p in folder.iterdir()
                          if p.is_file() and any(m in p.name for m in IDX_MARKS))
        except OSError:
            continue
        if not held:
            continue
        paths = {k: _find_idx(folder, stem) for k, stem in FASHION_FILES.items()}
        missing = [stem for k, stem in FASHION_FILES.items() if paths[k] is None]
        if missing:
            raise DataError(f"{folder} holds {', '.join(held)} but not {', '.join(missing)} "
                            "(Fashion-MNIST is these four files, gzipped or not, in one folder); "
                            "fix: put all four there, or move the others away")
        return paths
    return None


def download_fashion_mnist(root: Path) -> tuple[dict[str, Path] | None, str]:
    """torchvision's download into ``root/FashionMNIST/raw``: (the files or None, why not)."""
    try:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except Exception as exc:  # no network, a proxy, a full disk...
        return None, f"download failed: {first_line(exc)}"
    return fashion_mnist_files(root), "files missing after download"


def read_fashion_mnist(data: ArchiveDataConfig) -> Arrays:
    """Fashion-MNIST from ``data.root`` (the folder itself, ``fashion_mnist/`` or torchvision's
    ``FashionMNIST/raw/``), else Debian's copy, else downloaded if allowed."""
    root = Path(str(data.root)).expanduser()
    paths, error = fashion_mnist_files(root), "download=false"
    if paths is None and data.download:
        paths, error = download_fashion_mnist(root)
    if paths is None:
        tried = ", ".join(map(str, fashion_mnist_dirs(root)))
        raise DataError(
            f"Fashion-MNIST not found in {tried} ({error}); fix: `apt-get install "
            "dataset-fashion-mnist` (make data does it), or put the four idx files in "
            f"{root / 'fashion_mnist'}, or set data.root=<folder with them>")
    t = {k: read_idx(p, 3 if k.endswith("images") else 1) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = t[f"{split}_images"], t[f"{split}_labels"]
        if tuple(images.shape[1:]) != FASHION_SHAPE:
            raise DataError(f"{paths[split + '_images']} announces {images.shape[1]}x"
                            f"{images.shape[2]} images, not Fashion-MNIST's 28x28; fix: "
                            f"{REINSTALL}")
        check_labels(labels, len(images), 10, str(paths[f"{split}_labels"]),
                     str(paths[f"{split}_images"]))
    name = "Fashion-MNIST" + (f" (resized x{data.resize:g})" if data.resize != 1 else "")
    return Arrays(fitted(t["train_images"][:, None], data, name), t["train_labels"].long(),
                  fitted(t["test_images"][:, None], data, name), t["test_labels"].long(), 10,
                  {"files": file_identity(paths)})


# -- CIFAR --------------------------------------------------------------------------------------

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "CIFAR10", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "CIFAR100", 100),
}


def _read_cifar_file(path: Path, label_key: str,
                     num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: (N, 3, 32, 32) images and (N,) labels, checked."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data, labels = batch["data"], batch[label_key]
        images = torch.as_tensor(data, dtype=torch.uint8)
        if images.dim() != 2 or images.shape[1] != 3 * 32 * 32:
            raise ValueError(f"its images are {list(images.shape)}, not (N, 3072)")
        labels = torch.as_tensor(labels, dtype=torch.long)
    except Exception as exc:
        raise DataError(f"{path} is unreadable as a CIFAR batch ({type(exc).__name__}: "
                        f"{first_line(exc)}); fix: delete it so that it is downloaded again, "
                        "or copy torchvision's archive again") from None
    check_labels(labels, len(images), num_classes, str(path), str(path))
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar(data: ArchiveDataConfig) -> Arrays:
    """CIFAR-10/100 from torchvision's python archive in ``data.root`` (downloaded if
    allowed)."""
    subdir, train_files, test_files, label_key, tv_class, classes = CIFAR[data.name]
    root = Path(str(data.root)).expanduser()
    folder = root / subdir
    if not all((folder / f).is_file() for f in train_files + test_files):
        error = "download=false"
        if data.download:
            try:
                import torchvision.datasets

                getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
                error = None
            except Exception as exc:
                error = f"download failed: {first_line(exc)}"
        if error:
            raise DataError(f"{data.name} not found in {folder} ({error}); fix: run once where "
                            f"there is network (data.download=true), or copy torchvision's "
                            f"{subdir}/ into {root}, or set data.root=<its parent folder>")

    def split(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_cifar_file(folder / f, label_key, classes) for f in files]
        images = torch.cat([p[0] for p in parts])
        return fitted(images, data, data.name), torch.cat([p[1] for p in parts])

    paths = {f: folder / f for f in train_files + test_files}
    return Arrays(*split(train_files), *split(test_files), classes,
                  {"files": file_identity(paths)})
