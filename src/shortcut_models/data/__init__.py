"""Data sources; each has `name`, `kind`, `shape`, `num_classes` and a stateless
`batch(step, size, seed)`. Sources that need settings (a folder's path, its resolution) take
them as `data_options`, which the run's config stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from shortcut_models.data.images import ImageData, to_uint8
from shortcut_models.data.mnist import digit_data
from shortcut_models.data.toy2d import TOY_DATASETS, ToyData
from shortcut_models.errors import UsageError


class DataSource(Protocol):
    name: str
    shape: tuple[int, ...]
    num_classes: int
    kind: str

    def batch(
        self, step: int, batch_size: int, seed: int, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


IMAGE_DATASETS = ("mnist", "fashion-mnist")
FOLDER, LATENTS = "folder", "latents"

# The options each kind of source accepts, with their defaults (None: required).
DATA_OPTIONS: dict[str, dict[str, Any]] = {
    FOLDER: {
        "path": None,
        "resolution": 64,
        "channels": 3,
        "flip": False,
        "skip_bad": False,
        "unconditional": False,
    },
    LATENTS: {"path": None, "flip": False},
}


def option_flag(key: str) -> str:
    """The command-line flag of a data option."""
    return "--data-path" if key == "path" else "--" + key.replace("_", "-")


def dataset_names() -> list[str]:
    return [*TOY_DATASETS, *IMAGE_DATASETS, FOLDER, LATENTS]


def resolve_data_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """`options` checked against what source `name` accepts, with defaults filled in."""
    options = dict(options or {})
    accepted = DATA_OPTIONS.get(name, {})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        flags = ", ".join(option_flag(key) for key in unknown)
        raise UsageError(f"data set '{name}' does not take {flags}")
    values = {**accepted, **options}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise UsageError(f"data set '{name}' needs {option_flag(missing[0])}")
    return values


def build_data(name: str, options: dict[str, Any] | None = None) -> DataSource:
    """The data source called `name`; an unknown name is a UsageError listing the choices."""
    if name not in dataset_names():
        raise UsageError(f"unknown data set '{name}' (choose from: {', '.join(dataset_names())})")
    values = resolve_data_options(name, options)
    if name in TOY_DATASETS:
        return ToyData(name)
    if name in IMAGE_DATASETS:
        return digit_data(name)
    if name == FOLDER:
        from shortcut_models.data.folder import folder_data

        return folder_data(**values)
    from shortcut_models.data.latents import LatentData

    return LatentData(**values)


def image_reader(name: str, options: dict[str, Any] | None = None):
    """(read(start, stop, batch_size) -> uint8 batches, count, class names, description) of an
    image source, streaming files for a folder so a large one never sits in memory."""
    choices = (*IMAGE_DATASETS, FOLDER)
    if name not in choices:
        raise UsageError(f"'{name}' is not an image data set ({', '.join(choices)})")
    values = resolve_data_options(name, options)
    if name == FOLDER:
        from shortcut_models.data.folder import FolderReader, scan_folder

        listing = scan_folder(values["path"], values["unconditional"])
        reader = FolderReader(listing, values["resolution"], values["channels"], values["skip_bad"])

        def read_files(start: int, stop: int, batch_size: int) -> Iterator:
            return reader.batches(batch_size, start, stop)

        source = {"data": name, **values, "path": str(listing.root.resolve())}
        source.pop("flip")
        return read_files, len(listing.files), listing.class_names, source
    data = digit_data(name)

    def read_rows(start: int, stop: int, batch_size: int) -> Iterator:
        for first in range(start, stop, batch_size):
            index = torch.arange(first, min(first + batch_size, stop))
            yield to_uint8(data.prepare(data.images[index])), data.labels[index]

    names = [str(c) for c in range(data.num_classes)]
    return read_rows, len(data), names, {"data": name, "resolution": data.shape[-1]}


__all__ = [
    "DATA_OPTIONS",
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "DataSource",
    "ImageData",
    "ToyData",
    "build_data",
    "dataset_names",
    "image_reader",
    "resolve_data_options",
]
