"""Data sources; each has `shape`, `num_classes`, a stateless `batch(step, size, seed)`."""

from __future__ import annotations

from typing import Protocol

import torch

from shortcut_models.data.images import ImageData
from shortcut_models.data.mnist import digit_data
from shortcut_models.data.toy2d import TOY_DATASETS, ToyData
from shortcut_models.errors import UsageError


class DataSource(Protocol):
    name: str
    shape: tuple[int, ...]
    num_classes: int
    kind: str

    def batch(
        self, step: int, batch_size: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


IMAGE_DATASETS = ("mnist", "fashion-mnist")


def dataset_names() -> list[str]:
    return [*TOY_DATASETS, *IMAGE_DATASETS]


def build_data(name: str) -> DataSource:
    """The data source called `name`; an unknown name is a UsageError listing the choices."""
    if name in TOY_DATASETS:
        return ToyData(name)
    if name in IMAGE_DATASETS:
        return digit_data(name)
    raise UsageError(f"unknown data set '{name}' (choose from: {', '.join(dataset_names())})")


__all__ = [
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "DataSource",
    "ImageData",
    "ToyData",
    "build_data",
    "dataset_names",
]
