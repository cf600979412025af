"""What every command parses the same way: the parser class, number types, the shared flags, and
the flags generated from the option dataclasses (TrainConfig, objectives, backbones, data)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

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


class Once(argparse.Action):
    """A flag that may be given once: a second value is refused rather than silently kept."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None):
        if getattr(namespace, f"_{self.dest}_given", False):
            raise argparse.ArgumentError(self, "given twice; give it once")
        setattr(namespace, f"_{self.dest}_given", True)
        setattr(namespace, self.dest, values)


def path_arg(text: str) -> Path:
    """A path flag's value; empty text is refused (it would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (name a file or folder)")
    return Path(text)


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


def add_cfg(p: argparse.ArgumentParser | Any, text: str, default: Any = ((1, 1.0),)) -> None:
    """--cfg, the same on every command: one SCALE for every step budget, or a schedule (SCALE
    from 1 step, STEPS:SCALE from that budget on; few steps want more guidance than many)."""
    shown = " ".join(f"{n}:{w:g}" if n > 1 else f"{w:g}" for n, w in default)
    p.add_argument(
        "--cfg",
        nargs="+",
        metavar="SCALE|STEPS:SCALE",
        type=guidance_entry,
        default=list(default),
        help=f"{text}: one SCALE, or per step budget (SCALE from 1 step, STEPS:SCALE from that "
        f"budget on) (default {shown})",
    )


def cfg_schedule(args: argparse.Namespace) -> Any:
    """The GuidanceSchedule of --cfg (entries that do not make one are a UsageError)."""
    from shortcut_models.errors import UsageError
    from shortcut_models.guidance import schedule_from

    try:
        return schedule_from(args.cfg)
    except ValueError as exc:
        raise UsageError(f"--cfg: {exc}") from None


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
        p.add_argument("--out", required=True, type=path_arg, help=out)


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument(
        "--device",
        default=default,
        help="cpu, cuda, cuda:N, mps or auto: CUDA, then Apple's GPU (mps), then the CPU "
        "(default auto)",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=True,
        help="hide progress (bars on a terminal, log lines every 30 s elsewhere)",
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
