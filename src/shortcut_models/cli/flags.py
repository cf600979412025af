"""The flags generated from the option dataclasses (the config's sections, RunOptions, the
objectives', backbones' and data sets' options), the partial config tree they give, and the
tables of docs/options.md."""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path
from typing import Any

from shortcut_models.cli.args import int_arg, seed_arg
from shortcut_models.options import Option


@cache
def section_options() -> dict[str, list[Option]]:
    """{"training": its options, "optimisation": ...}: the flags of TrainConfig's sections."""
    from shortcut_models.config import SECTION_TYPES
    from shortcut_models.options import collect

    return {name: collect({"train": cls}) for name, cls in SECTION_TYPES.items()}


def config_options() -> list[Option]:
    return [option for options in section_options().values() for option in options]


@cache
def run_options() -> list[Option]:
    from shortcut_models.execution import RunOptions
    from shortcut_models.options import collect

    return collect({"run": RunOptions})


@cache
def objective_options() -> list[Option]:
    from shortcut_models.objectives import OBJECTIVES
    from shortcut_models.options import collect

    return collect(OBJECTIVES)


@cache
def backbone_options() -> list[Option]:
    from shortcut_models.backbones import BACKBONE_OPTIONS
    from shortcut_models.options import collect

    return collect(BACKBONE_OPTIONS)


@cache
def data_options() -> list[Option]:
    from shortcut_models.data import data_option_classes
    from shortcut_models.options import collect

    return collect(data_option_classes())


def add_options(
    p: argparse.ArgumentParser | Any, options: list[Option], skip: tuple[str, ...] = ()
) -> None:
    """One flag per option, absent from the namespace unless given (so a config knows what the
    user set); the help names what accepts it when not everything does, and its default."""
    for o in options:
        if o.name in skip:
            continue
        owners = list(o.defaults)
        every = len(owners) == len(_all_owners(options))
        text = o.help if every else f"{', '.join(owners)}: {o.help}"
        text = f"{text} (default {o.default_text()})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": o.name, "default": argparse.SUPPRESS, "help": text}
        if o.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _TYPES.get(o.name, _KIND_TYPES[o.kind])
            if o.choices:
                kwargs["choices"] = list(o.choices)
        p.add_argument(o.flag, **kwargs)


def given(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    """{option: value} of the flags given; path options made absolute."""
    values = vars(args)
    out = {o.name: values[o.name] for o in options if o.name in values}
    for o in options:
        if o.path and o.name in out:
            out[o.name] = str(Path(out[o.name]).expanduser().resolve())
    return out


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as a partial config tree (`config.merge`): the chosen names and the
    options of data, objective and backbone, the training and optimisation sections, and the
    RunOptions values under "run"."""
    values = vars(args)
    tree: dict[str, Any] = {}
    for key, options in (
        ("data", data_options()),
        ("objective", objective_options()),
        ("backbone", backbone_options()),
    ):
        chosen = {"options": given(args, options)} if given(args, options) else {}
        if key in values:
            chosen["name"] = values[key]
        if chosen:
            tree[key] = chosen
    for key, options in {**section_options(), "run": run_options()}.items():
        if given(args, options):
            tree[key] = given(args, options)
    return tree


def option_tables() -> str:
    """The tables of every generated flag in docs/options.md (a test checks them)."""
    from shortcut_models.backbones import BACKBONE_OPTIONS
    from shortcut_models.data import data_option_classes
    from shortcut_models.objectives import OBJECTIVES
    from shortcut_models.options import markdown_table

    sections = list(section_options().items())
    tables = [
        *((f"{name.capitalize()} (`shortcut train`)", options, None) for name, options in sections),
        ("How and where a run executes (`shortcut train`)", run_options(), None),
        ("Objectives", objective_options(), list(OBJECTIVES)),
        ("Backbones", backbone_options(), list(BACKBONE_OPTIONS)),
        ("Data", data_options(), list(data_option_classes())),
    ]
    return "\n\n".join(f"#### {title}\n\n{markdown_table(o, who)}" for title, o, who in tables)


def _all_owners(options: list[Option]) -> set[str]:
    return {owner for o in options for owner in o.defaults}


_KIND_TYPES: dict[type, Any] = {int: int_arg, float: float, str: str}
_TYPES: dict[str, Any] = {"seed": seed_arg}
