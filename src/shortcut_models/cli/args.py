"""What every command parses the same way: the parser class, number types, the shared flags, and
the flags generated from the option dataclasses (TrainConfig, objectives, backbones, data)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from shortcut_models.options import Option

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def command(
    subparsers: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    summary: str,
    description: str,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand whose parsed arguments go to `handler`, with the message flags every
    command has."""
    p = subparsers.add_parser(name, help=summary, description=description, **kwargs)
    p.set_defaults(handler=handler)
    messages = p.add_argument_group("messages")
    messages.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="debug messages too (the traceback of an error reported in one line)",
    )
    messages.add_argument(
        "-q", "--quiet", action="count", default=0, help="warnings and errors only"
    )
    messages.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="re-raise errors with their traceback (also SHORTCUT_DEBUG=1)",
    )
    return p


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Dataclass `cls` from the parsed arguments of the same names (and `overrides`)."""
    values = vars(args)
    known = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
    return cls(**{**known, **overrides})


def pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """{name: value} of the parsed arguments `names`, to pass on as keywords."""
    return {name: getattr(args, name) for name in names}


def add_count(p: argparse.ArgumentParser, flag: str, default: int, text: str) -> None:
    """A positive integer flag whose help ends with its default."""
    p.add_argument(flag, type=positive_int, default=default, help=f"{text} (default {default})")


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    value = int_arg(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_arg(text: str) -> int:
    from shortcut_models.config import MAX_SEED

    value = int_arg(text)
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is an integer in [0, 2^63), got {text}")
    return value


def guidance_entry(text: str) -> tuple[int, float]:
    """A --cfg value: SCALE (from 1 step) or STEPS:SCALE (guidance.parse_entry)."""
    from shortcut_models.guidance import parse_entry

    try:
        return parse_entry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def data_set(kind: str | None = None) -> Callable[[str], str]:
    """A --data value: a registered data set (of `kind`); plugins load only for a name that is
    not built in, so a broken plugin cannot stop a command that does not use it."""

    def check(text: str) -> str:
        from shortcut_models.data import dataset
        from shortcut_models.errors import UsageError

        try:
            entry = dataset(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if kind is not None and entry.kind != kind:
            raise argparse.ArgumentTypeError(f"'{text}' is a {entry.kind} data set, not {kind}")
        return text

    return check


def data_help(kind: str | None = None) -> str:
    """The built-in names, for a --data help text (plugins' sets are listed by `--help`'s error
    for an unknown name)."""
    from shortcut_models.data import builtin_names

    return ", ".join(builtin_names(kind)) + ", or a plugin's"


def add_paths(p: argparse.ArgumentParser, ckpt: str | None, out: str | None) -> None:
    """The required --ckpt (a run folder or checkpoint file) and --out, with their help."""
    if ckpt is not None:
        p.add_argument("--ckpt", required=True, type=Path, help=ckpt)
    if out is not None:
        p.add_argument("--out", required=True, type=Path, help=out)


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument(
        "--device",
        default=default,
        help="cpu, cuda, cuda:N, mps or auto: CUDA, then Apple's GPU (mps), then the CPU "
        "(default auto)",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=True, help="hide progress"
    )


def add_sampling(p: argparse.ArgumentParser, default_steps: list[int], default_num: int) -> None:
    """The flags of commands that sample a checkpoint: budgets, count, noise, batch, weights."""
    p.add_argument(
        "--steps",
        nargs="+",
        type=positive_int,
        default=default_steps,
        help=f"step budgets; a shortcut model takes powers of two up to M "
        f"(default {' '.join(map(str, default_steps))})",
    )
    p.add_argument(
        "--num",
        "--num-samples",  # the spelling torchrun's own parser does not mistake for --numa-binding
        dest="num",
        type=positive_int,
        default=default_num,
        help=f"number of samples per step budget (default {default_num})",
    )
    p.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="noise seed; every step budget gets the same noise (default 0)",
    )
    p.add_argument(
        "--batch", type=positive_int, default=4096, help="samples per network call (default 4096)"
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="use the raw training weights instead of the EMA weights (the default unless the "
        "run's eval_weights says model, as under --recipe reference)",
    )
    add_device(p)


def weights(args: argparse.Namespace) -> str | None:
    """ "model" with --raw, else the run's own choice (its config's eval_weights)."""
    return "model" if args.raw else None


# -- flags generated from the option dataclasses ----------------------------------------------


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
    from shortcut_models.config import RunOptions
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
    """The README's tables of every generated flag (checked against the README by a test)."""
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
