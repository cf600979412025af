"""Backbones: networks s(x, t, d, y) -> velocity. Add one with a file and a registry line."""

from __future__ import annotations

from typing import Any

from torch import nn

from shortcut_models.backbones.mlp import MLP
from shortcut_models.errors import UsageError

BACKBONES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
}


def build_backbone(name: str, **options: Any) -> nn.Module:
    """Instantiate a registered backbone; unknown names or options are a UsageError."""
    if name not in BACKBONES:
        raise UsageError(f"unknown backbone '{name}' (choose from: {', '.join(sorted(BACKBONES))})")
    try:
        return BACKBONES[name](**options)
    except TypeError as exc:
        raise UsageError(f"bad options for backbone '{name}': {exc}") from None
