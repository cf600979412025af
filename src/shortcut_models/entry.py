"""The `shortcut` command's entry point: a Ctrl-C while torch is still being imported (the
first seconds) ends in one line and exit code 130, like one during the work."""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from shortcut_models.cli import main
    except KeyboardInterrupt:
        print("shortcut: interrupted", file=sys.stderr)
        return 130
    return main()
