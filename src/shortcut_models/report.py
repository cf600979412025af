"""Plain-text results: Markdown tables and JSON files, written atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shortcut_models import logs
from shortcut_models.errors import UsageError
from shortcut_models.files import atomic_write

log = logs.get(__name__)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded to line up in a terminal too."""
    cells = [list(map(str, headers))] + [[format_value(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def finite_json(payload: Any) -> Any:
    """The payload with NaN and inf replaced by null, which JSON can hold."""
    if isinstance(payload, float) and not math.isfinite(payload):
        return None
    if isinstance(payload, dict):
        return {key: finite_json(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite_json(value) for value in payload]
    return payload


def write_json(path: str | Path, payload: Any) -> Path:
    """Valid JSON (a NaN or inf becomes null, with a warning), written atomically; see
    write_output for where it goes when `path` cannot be written."""
    clean = finite_json(payload)
    if clean != payload:
        log.warning(f"warning: {path}: NaN or inf values written as null")
    text = json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_output(Path(path), lambda tmp: tmp.write_text(text))


def check_output_file(path: str | Path) -> Path:
    """Fail before any work if a result cannot be written to `path` (a folder, no permission)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder: give a file name for the result")
    if path.exists() and not path.is_file():  # a rename would replace a device, FIFO or socket
        raise UsageError(f"{path} exists and is not a regular file: give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")
    return path


def write_output(path: Path, write: Callable[[Path], None]) -> Path:
    """atomic_write(path, write); if that still fails at the end (a full disk, a folder that
    changed), the result goes to the temporary folder instead, and stderr says where."""
    try:
        atomic_write(path, write)
        return path
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"{os.getpid()}-{path.name}"
        atomic_write(fallback, write)
        log.error(f"could not write {path} ({exc.strerror or exc}); wrote the result to {fallback}")
        return fallback


def machine_record() -> dict[str, Any]:
    """Where a measured figure came from: the CPU kind torch computes with (and whether an
    AVX2-only CPU was emulated: ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA), threads, torch, GPU,
    and the commit of this checkout ("+changes" when files differ from it)."""
    import platform
    import subprocess

    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    emulated = os.environ.get("ATEN_CPU_CAPABILITY") or os.environ.get("ONEDNN_MAX_CPU_ISA")
    root = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "-uno"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        commit += "+changes" if changed else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": f"{capability} (emulated)" if emulated else capability,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "commit": commit,
    }
