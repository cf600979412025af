"""The `shortcut` command line: one module per command, each with `register(subparsers)` and
`run(args)`, which parses and then makes one library call.

Every user mistake ends as one line on stderr and exit code 2; a training failure as one line
and exit code 1; a run stopped by SIGINT / SIGTERM saves its checkpoint and exits 128 + signal.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from shortcut_models.cli import compare, demo, evaluate, export, sample, serve, tools, train
from shortcut_models.cli.args import Parser
from shortcut_models.errors import TrainingError, UsageError

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


def main(argv: Sequence[str] | None = None) -> int:
    try:  # the parser's choices import torch: a Ctrl-C in these first seconds is one line too
        args = build_parser().parse_args(argv)
        from shortcut_models.distributed import teardown
    except KeyboardInterrupt:
        print("shortcut: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:  # a data set plugin that fails to register
        print(f"shortcut: error: {exc}", file=sys.stderr)
        return 2
    # past a file-size limit, a write fails (and is reported) instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    ok = False
    try:
        code = int(args.handler(args))
        ok = code == 0
        return code
    except UsageError as exc:
        print(f"shortcut {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"shortcut {args.command}: training failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shortcut {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only folder, a file that vanished
        where = f": {exc.filename}" if exc.filename else ""
        print(f"shortcut {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    finally:
        teardown(wait=ok)  # leave the torchrun process group, if any
