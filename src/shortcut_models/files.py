"""Files written so that a crash, a kill or a full disk never leaves a half-written one.

`atomic_write` is the one way the library writes a result: a temporary file in the same folder,
fsync, then one rename over the target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shortcut_models.errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_files(folder: Path, name: str) -> list[Path]:
    """Leftovers of `atomic_write(folder / name, ...)` cut short (a kill during a save)."""
    return sorted(Path(folder).glob(f".{name}.*.tmp"))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path), then move tmp_path over `path` in one rename. The file gets the
    mode any new file gets (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_symlink():
        # the rename would put a regular file in place of a device node, FIFO or socket
        raise UsageError(f"{path} exists and is not a regular file: give a file name to write")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # after: some writers replace the file
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_arrays(arrays: dict[str, Any], path: Path) -> None:
    """Several named numpy arrays in one .npz, written atomically (under exactly `path`: numpy
    would add .npz to a temporary name)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


def read_cached_arrays(path: Path, check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
    """Every array of an .npz this library cached (never pickled objects). A file that cannot be
    read, or whose arrays `check` finds wrong (it returns the reason), is one UsageError naming it
    and saying what to do: a cache can be damaged by a full disk, a copy or a person."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        reason = check(arrays)
    except Exception as exc:  # numpy raises OSError, ValueError, BadZipFile, EOFError ...
        reason = f"{type(exc).__name__}: {exc}"
    if reason:
        raise UsageError(
            f"the cached file {path} is damaged ({reason}); delete it and run again to rebuild it"
        )
    return arrays


def prepare_out_dir(out_dir: Path) -> Path:
    """Create the run folder and prove it is writable, or raise a UsageError."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"  # one per process under torchrun
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"cannot write to output folder {out_dir}: {exc.strerror or exc}"
        ) from None
    return out_dir
