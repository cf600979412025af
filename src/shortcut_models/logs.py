"""Messages to the user: the `shortcut_models` logger, one line per message on stderr (beside a
progress bar without breaking it), from rank 0 of a torchrun job only, except errors and
messages that say they concern their rank (`extra=EVERY_RANK`), which other ranks prefix with
"rank N:". `shortcut ... --verbose` adds debug lines (tracebacks of
errors that are reported in one line), `--quiet` keeps warnings and errors; `--debug` or
SHORTCUT_DEBUG=1 makes the command re-raise errors instead of reporting them in one line."""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

ROOT = "shortcut_models"
EVERY_RANK = {"every_rank": True}


def get(name: str) -> logging.Logger:
    """The logger of module `name` (under the package's logger)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


class _Stderr(logging.Handler):
    """Writes through tqdm (a progress bar stays intact) to the sys.stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            rank = os.environ.get("RANK", "0")
            prefix = "" if rank == "0" else f"rank {rank}: "
            tqdm.write(prefix + self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging must never raise)
            self.handleError(record)


def _shown(record: logging.LogRecord) -> bool:
    if os.environ.get("RANK", "0") == "0" or record.levelno >= logging.ERROR:
        return True
    return getattr(record, "every_rank", False)


def configure(verbosity: int = 0) -> None:
    """Level of the package's messages: 0 info, 1 and more debug, -1 and less warnings."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    logging.getLogger(ROOT).setLevel(level)


def debug_requested(flag: bool = False) -> bool:
    """Whether errors should propagate with their traceback (--debug or SHORTCUT_DEBUG=1)."""
    return flag or os.environ.get("SHORTCUT_DEBUG", "") not in ("", "0")


_root = logging.getLogger(ROOT)
if not _root.handlers:  # the package speaks to stderr unless the application says otherwise
    _handler = _Stderr()
    _handler.addFilter(_shown)
    _root.addHandler(_handler)
    _root.setLevel(logging.INFO)
    _root.propagate = False
