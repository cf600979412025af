"""Backbones: networks s(x, t, d, y) -> velocity. Add one with a file and a line in each registry
below (the class, and the dataclass of its user options, from which the flags are generated).

Each backbone class has `data_options(shape, num_classes)`: the constructor arguments the data
fixes. Preset names (`DiT-B/2`, ...) expand to a class plus size options.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from shortcut_models.backbones.dit import DIT_PRESETS, DiT, DiTOptions, dit_preset
from shortcut_models.backbones.mlp import MLP, MLPOptions
from shortcut_models.backbones.unet import UNet, UNetOptions
from shortcut_models.errors import UsageError

BACKBONES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "dit": DiT,
    "unet": UNet,
}
BACKBONE_OPTIONS: dict[str, type] = {"mlp": MLPOptions, "dit": DiTOptions, "unet": UNetOptions}


def backbone_names() -> list[str]:
    return [*BACKBONES, *DIT_PRESETS]


def resolve_backbone(name: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """A backbone name or preset -> (class, preset options)."""
    if name in BACKBONES:
        return BACKBONES[name], {}
    if name in DIT_PRESETS:
        return DiT, dit_preset(name)
    raise UsageError(f"unknown backbone '{name}' (choose from: {', '.join(backbone_names())})")


def backbone_kind(name: str) -> str:
    """The registry key of a backbone name or preset ('DiT-B/2' -> 'dit')."""
    cls, _ = resolve_backbone(name)
    return next(key for key, value in BACKBONES.items() if value is cls)


def build_backbone(name: str, **options: Any) -> nn.Module:
    """Instantiate a backbone or preset; unknown names or bad options are a UsageError."""
    cls, preset = resolve_backbone(name)
    try:
        return cls(**{**preset, **options})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad options for backbone '{name}': {exc}") from None
