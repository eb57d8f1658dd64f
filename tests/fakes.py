"""Small stand-ins for the archives (Fashion-MNIST's idx files, CIFAR's pickles), written into a
test's folder, with the ways they can be wrong."""

import gzip
import pickle
import struct
from pathlib import Path

import torch

from roadmap.train.archives import FASHION_FILES


def idx_bytes(array: torch.Tensor, shape: tuple[int, ...] | None = None) -> bytes:
    """An idx file of ``array``; ``shape``: what its header announces instead of its shape."""
    shape = tuple(array.shape) if shape is None else shape
    header = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return header + array.numpy().tobytes()


def write_fashion(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True,
                  **arrays: torch.Tensor) -> dict[str, Path]:
    """The four Fashion-MNIST files in ``folder`` (random images, labels 0-9 in turn);
    ``arrays`` replaces any of them by name (``train_labels=...``)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {"train_images": torch.randint(0, 256, (n_train, 28, 28), dtype=torch.uint8),
            "train_labels": torch.arange(n_train, dtype=torch.uint8) % 10,
            "test_images": torch.randint(0, 256, (n_test, 28, 28), dtype=torch.uint8),
            "test_labels": torch.arange(n_test, dtype=torch.uint8) % 10, **arrays}
    paths = {}
    for key, stem in FASHION_FILES.items():
        raw = idx_bytes(made[key])
        paths[key] = folder / (stem + (".gz" if gz else ""))
        paths[key].write_bytes(gzip.compress(raw) if gz else raw)
    return paths


def write_cifar(root: Path, n: int = 10, labels: list[int] | None = None,
                width: int = 3072) -> Path:
    """torchvision's CIFAR-10 archive in ``root`` (n images a batch, labels 0-9 in turn)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": torch.randint(0, 256, (n, width), dtype=torch.uint8).numpy(),
                 "labels": list(labels if labels is not None else [i % 10 for i in range(n)])}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder
