"""Plain-text results: Markdown tables and JSON files, written atomically."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shortcut_models.checkpoint import atomic_write_text


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


def write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(Path(path), json.dumps(payload, indent=2, sort_keys=False) + "\n")
