"""One writer per output folder: an exclusive lock that dies with its holder.

`shortcut train`, `encode` and `pairs` take it before touching a folder, so a second run on the
same folder stops with one line naming the holder instead of mixing checkpoints and logs. The
lock is `fcntl.flock` on `OUT/.lock`: the kernel releases it when the holder exits, however it
exits (kill -9 included), so a stale lock cannot block anyone; the file keeps the last holder's
pid, host and start time, for the message only. Within one process a new lock on a folder takes
over from the previous one (one Trainer built after another, as tests and notebooks do).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

from shortcut_models.errors import UsageError

LOCK_NAME = ".lock"
_HELD: dict[Path, FolderLock] = {}  # this process's locks, by resolved lock path


class FolderLock:
    """Held from construction until `release()` (or the process's exit)."""

    def __init__(self, folder: Path, what: str) -> None:
        self.path = (Path(folder) / LOCK_NAME).resolve()
        if self.path in _HELD:
            _HELD[self.path].release()
        self.handle: IO[str] | None = open(self.path, "a+")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            self.handle = None
            raise UsageError(
                f"{folder} is in use by {holder}: wait for it to finish or choose another --out"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.handle.write(f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {started})")
        self.handle.flush()
        _HELD[self.path] = self

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
        if _HELD.get(self.path) is self:
            del _HELD[self.path]

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def undo_new_files(folder: Path, folder_is_new: bool, lock_is_new: bool) -> None:
    """What a refused run made, undone: the lock file it created (only once released: removing
    another holder's file would end its exclusion), then the folder if it made it and nothing
    else is in it."""
    if lock_is_new:
        (Path(folder) / LOCK_NAME).unlink(missing_ok=True)
    if folder_is_new:
        with contextlib.suppress(OSError):
            Path(folder).rmdir()
