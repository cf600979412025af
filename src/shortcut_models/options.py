"""One source for every user option: a dataclass field declared with `option(...)` carries its
help text, and the command line's flags (name, type, default, choices) and docs/options.md's
tables are generated from those fields, never restated by hand.

A subclass that only changes an inherited option's default declares it with `option(value)`
(no help): the text of the class it overrides still describes it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any

HELP, CHOICES, FLAG, PATH, UNSET = "help", "choices", "flag", "path", "unset"


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: Sequence[Any] | None = None,
    flag: str | None = None,
    path: bool = False,
    default_factory: Any = MISSING,
    unset: str = "required",
) -> Any:
    """A dataclass field that is a user option. `flag` overrides the generated `--field-name`;
    `path` marks values that are file paths (made absolute when given on the command line);
    `unset` is what a default of None means ("required", or for example "auto")."""
    metadata = {
        HELP: help,
        CHOICES: tuple(choices) if choices else None,
        FLAG: flag,
        PATH: path,
        UNSET: unset,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Option:
    """One user option as the command line and the README show it, merged over the classes
    (objectives, backbones, data sources) that accept it."""

    name: str
    flag: str
    kind: type  # bool, int, float or str
    help: str
    choices: tuple[Any, ...] | None
    path: bool
    defaults: dict[str, Any]  # owner name -> its default
    unset: str = "required"  # what a default of None means

    def default_text(self) -> str:
        """'128', or '0; meanflow 1.0' when owners differ (the most common default first)."""
        values: dict[str, list[str]] = {}
        for owner, value in self.defaults.items():
            values.setdefault(self.unset if value is None else _show(value), []).append(owner)
        ordered = sorted(values.items(), key=lambda item: -len(item[1]))
        first, *rest = ordered
        return "; ".join([first[0], *(f"{', '.join(owners)} {value}" for value, owners in rest)])


def is_option(f: dataclasses.Field) -> bool:
    return f.init and HELP in f.metadata


def declared_options(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass `cls` declared with `option(...)`, in declaration order."""
    return [f for f in dataclasses.fields(cls) if is_option(f)]


def collect(owners: Mapping[str, type]) -> list[Option]:
    """The options of several dataclasses (name -> class, in registry order), merged by field
    name: one help text describes a field (owners that only change its default give none; two
    different texts are an error), every owner keeps its default."""
    merged: dict[str, dict[str, Any]] = {}
    for owner, cls in owners.items():
        hints = typing.get_type_hints(cls)
        for f in declared_options(cls):
            entry = merged.setdefault(
                f.name,
                {"kind": _kind(hints[f.name], f.name), "meta": f.metadata, "defaults": {}},
            )
            if not entry["meta"][HELP] and f.metadata[HELP]:
                entry["meta"] = f.metadata
            elif f.metadata[HELP] and f.metadata[HELP] != entry["meta"][HELP]:
                raise TypeError(  # one flag, one meaning: name the second option differently
                    f"option '{f.name}' of {owner} has its own help text; another owner's differs"
                )
            entry["defaults"][owner] = _default(f)
    options = []
    for name, entry in merged.items():
        meta = entry["meta"]
        if not meta[HELP]:
            raise TypeError(f"option '{name}' has no help text in any of {', '.join(owners)}")
        options.append(
            Option(
                name=name,
                flag=meta[FLAG] or "--" + name.replace("_", "-"),
                kind=entry["kind"],
                help=meta[HELP],
                choices=meta[CHOICES],
                path=meta[PATH],
                defaults=entry["defaults"],
                unset=meta.get(UNSET, "required"),
            )
        )
    return options


def markdown_table(options: Iterable[Option], owners: Sequence[str] | None = None) -> str:
    """The README's table of `options`: flag, what accepts it (when not all of `owners`), default,
    meaning."""
    with_owners = owners is not None
    header = "| flag | " + ("applies to | " if with_owners else "") + "default | meaning |"
    lines = [header, "|---|" + ("---|" if with_owners else "") + "---|---|"]
    for o in options:
        flag = f"`{o.flag}`" if o.kind is not bool else f"`{o.flag}` / `--no-{o.flag[2:]}`"
        if o.choices:
            flag += " " + "\\|".join(map(str, o.choices))
        cells = [flag]
        if with_owners:
            accepted = [name for name in owners if name in o.defaults]
            cells.append("all" if len(accepted) == len(owners) else ", ".join(accepted))
        cells += [o.default_text(), o.help.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None  # required


def _kind(hint: Any, name: str) -> type:
    kind = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(kind) is typing.Literal:
        return str
    if kind in (bool, int, float, str):
        return kind
    raise TypeError(f"option '{name}' has type {hint}; options are bool, int, float or str")


def _show(value: Any) -> str:
    if value is None:
        return "required"
    if value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
