"""How a run ended."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainResult:
    step: int
    status: str  # "completed" or "interrupted"
    checkpoint: Path
    signal: int | None = None
