"""Backbones: networks s(x, t, d, y) -> velocity. Add one with a file and a line in each registry
below (the network class, and the dataclass of its options, from which the flags come).

A backbone is built from its options dataclass and the data's sample shape and classes:
`Network(options, shape, num_classes, guidance_input=..., ...)`, the keyword inputs being what
the objective needs (`Objective.network_inputs`). Preset names (`DiT-B/2`, ...) are a class plus
size options over its defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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


def backbone_kind(name: str) -> str:
    """The registry key of a backbone name or preset ('DiT-B/2' -> 'dit')."""
    if name in BACKBONES:
        return name
    if name in DIT_PRESETS:
        return "dit"
    raise UsageError(f"unknown backbone '{name}' (choose from: {', '.join(backbone_names())})")


def preset_values(name: str) -> dict[str, Any]:
    """The options a preset name sets over its class's defaults ({} for a plain name)."""
    return dit_preset(name) if name in DIT_PRESETS else {}


def backbone_options(name: str, values: Mapping[str, Any] | None = None) -> Any:
    """The options dataclass of backbone `name`: its defaults < the preset's values < `values`;
    an unknown option is a UsageError."""
    cls = BACKBONE_OPTIONS[backbone_kind(name)]
    values = {**preset_values(name), **(values or {})}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"backbone '{name}' has no option(s): {', '.join(unknown)}")
    return cls(**values)


def build_backbone(
    name: str,
    options: Any,
    shape: tuple[int, ...],
    num_classes: int = 0,
    data_name: str = "",
    **inputs: bool,
) -> nn.Module:
    """The network of backbone `name` from its options, for samples of `shape` (of data set
    `data_name`, for the message); data it cannot take and options it cannot build are a
    UsageError."""
    cls = BACKBONES[backbone_kind(name)]
    try:
        cls.check_shape(tuple(shape))
    except ValueError as exc:
        data = f"data '{data_name}'" if data_name else f"data of shape {tuple(shape)}"
        raise UsageError(f"backbone '{name}' cannot take {data}: {exc}") from None
    try:
        return cls(options, tuple(shape), num_classes, **inputs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad options for backbone '{name}': {exc}") from None
