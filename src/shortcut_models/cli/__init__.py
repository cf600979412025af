"""The `shortcut` command line: a module per command (`tools` holds the small ones: stats,
encode, pairs, import-official), each with `register(subparsers)` and `run(args)`, which parses
and then makes one library call; `args` is what every command parses the same way, `flags` the
flags generated from the option dataclasses.

Every user mistake ends as one line on stderr and exit code 2; a training failure as one line
and exit code 1; a run stopped by SIGINT / SIGTERM saves its checkpoint and exits 128 + signal.
`--verbose` adds the traceback of such an error (a debug line), `--debug` (or SHORTCUT_DEBUG=1)
re-raises it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from shortcut_models import logs
from shortcut_models.cli import compare, demo, evaluate, export, sample, serve, tools, train
from shortcut_models.cli.args import Parser
from shortcut_models.errors import Terminated, TrainingError, UsageError

log = logs.get(__name__)

COMMANDS = (train, sample, evaluate, tools, export, serve, compare, demo)


def build_parser() -> Parser:
    parser = Parser(
        prog="shortcut",
        description="Train, sample and evaluate shortcut models (Frans et al., 2024): one "
        "network sampled in 1, 2, 4, ..., 128 steps.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def wants_plugins(argv: Sequence[str]) -> bool:
    """Whether the command line names a data set that is not built in, or asks for help: only
    then are data set plugins loaded (their options become flags)."""
    from shortcut_models.data import builtin_names

    if "-h" in argv or "--help" in argv:
        return True
    builtin = set(builtin_names())
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--data=") else None
        if arg == "--data" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value not in builtin:
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # the parser's choices import torch: a Ctrl-C in these first seconds is one line too
        if wants_plugins(argv):
            from shortcut_models.data import load_plugins

            load_plugins()
        args = build_parser().parse_args(argv)
        from shortcut_models.distributed import teardown
    except KeyboardInterrupt:
        log.warning("shortcut: interrupted")
        return 130
    except UsageError as exc:  # a data set plugin that fails to register
        log.error(f"shortcut: error: {exc}")
        return 2
    # past a file-size limit, a write fails (and is reported) instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # SIGTERM unwinds like Ctrl-C (temporary files removed, one line, exit 143); training installs
    # its own handlers for the length of the run and saves first
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    logs.configure(args.verbose - args.quiet)
    ok = False
    try:
        code = int(args.handler(args))
        ok = code == 0
        return code
    except (UsageError, TrainingError, KeyboardInterrupt, OSError) as exc:
        if logs.debug_requested(args.debug):
            raise
        log.debug(f"shortcut {args.command}: {type(exc).__name__}", exc_info=True)
        return _report(args.command, exc)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        teardown(wait=ok)  # leave the torchrun process group, if any


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _report(command: str, exc: BaseException) -> int:
    """One line for an error the user can act on; its exit code."""
    if isinstance(exc, UsageError):
        log.error(f"shortcut {command}: error: {exc}")
        return 2
    if isinstance(exc, TrainingError):
        log.error(f"shortcut {command}: training failed: {exc}")
        return 1
    if isinstance(exc, KeyboardInterrupt):
        log.warning(
            f"shortcut {command}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}"
        )
        return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
    # an OSError: a full disk, a read-only folder, a file that vanished
    where = f": {exc.filename}" if exc.filename else ""
    log.error(f"shortcut {command}: error: {exc.strerror or exc}{where}")
    return 1
