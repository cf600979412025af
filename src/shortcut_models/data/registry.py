"""The registry of data sets: a name, its builder, the dataclass of its options and its kind.
Plugins (entry points of the group `shortcut_models.datasets`) load only when a name is not
built in, so a broken plugin cannot stop a command that does not use it."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shortcut_models import logs
from shortcut_models.data.source import DataKind, DataSource
from shortcut_models.errors import UsageError
from shortcut_models.options import declared_options

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
_BUILTIN: frozenset[str] = frozenset()  # set by mark_builtin once the built-ins are registered
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
    return [n for n, entry in _REGISTRY.items() if entry.kind == "image" and _by_name(entry)]


def _by_name(entry: RegisteredDataset) -> bool:
    """Whether a name alone opens the set: no options, or none that must be given (a field whose
    default is None, such as a folder's path)."""
    if entry.options is None:
        return True
    return all(f.default is not None for f in dataclasses.fields(entry.options))


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


def mark_builtin() -> None:
    """Everything registered so far ships with the package (called once, by `data`)."""
    global _BUILTIN
    _BUILTIN = frozenset(_REGISTRY)
