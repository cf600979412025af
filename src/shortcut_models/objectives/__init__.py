"""Training objectives. Adding one is one file plus one line in OBJECTIVES below: a dataclass
subclass of `Objective` whose fields, declared with `option(default, "help")`, are its options
(the `shortcut train` flags and docs/options.md's tables are generated from them), and whose
`targets(model, target_net, x1, y, generator)` returns a `TrainingBatch` (or which overrides
`loss(net, target_net, x1, y, generator)` when it makes its own network calls)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import Objective, TrainingBatch
from shortcut_models.objectives.consistency_distillation import ConsistencyDistillation
from shortcut_models.objectives.consistency_training import ConsistencyTraining
from shortcut_models.objectives.flow_matching import FlowMatching
from shortcut_models.objectives.imf import ImprovedMeanFlow
from shortcut_models.objectives.live_reflow import LiveReflow
from shortcut_models.objectives.meanflow import MeanFlow
from shortcut_models.objectives.progressive_distillation import ProgressiveDistillation
from shortcut_models.objectives.reflow import Reflow
from shortcut_models.objectives.shortcut import ImprovedShortcut, Shortcut
from shortcut_models.options import declared_options

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (
        FlowMatching,
        Shortcut,
        ProgressiveDistillation,
        ConsistencyDistillation,
        ConsistencyTraining,
        Reflow,
        LiveReflow,
        MeanFlow,
        ImprovedShortcut,
        ImprovedMeanFlow,
    )
}


def objective_options(name: str) -> set[str]:
    """The option names an objective accepts."""
    return {f.name for f in declared_options(_lookup(name))}


@cache
def options_type(name: str) -> type:
    """The dataclass of objective `name`'s options (its `option(...)` fields, with their types,
    defaults and help): what a config holds for it, e.g. `ShortcutOptions`."""
    cls = _lookup(name)
    hints = typing.get_type_hints(cls)
    fields = [  # fresh Field objects: a dataclass takes over the ones it is given
        (f.name, hints[f.name], dataclasses.field(
            default=f.default, default_factory=f.default_factory, metadata=f.metadata
        ))
        for f in declared_options(cls)
    ]  # fmt: skip
    made = dataclasses.make_dataclass(f"{cls.__name__}Options", fields)
    made.__doc__ = f"The options of objective '{name}' ({cls.__module__}.{cls.__name__})."
    return made


def make_options(name: str, values: Mapping[str, Any] | None = None) -> Any:
    """`options_type(name)` from `values` over its defaults; unknown options are a UsageError."""
    values = dict(values or {})
    unknown = sorted(set(values) - objective_options(name))
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") for key in unknown)
        raise UsageError(f"{flags} does not apply to objective '{name}'")
    return options_type(name)(**values)


def build_objective(name: str, **options: Any) -> Objective:
    """Instantiate a registered objective; unknown names or options are a UsageError."""
    cls = _lookup(name)
    unknown = set(options) - objective_options(name) - {"num_classes"}
    if unknown:
        raise UsageError(f"objective '{name}' has no option(s): {', '.join(sorted(unknown))}")
    return cls(**options)


def _lookup(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective '{name}' (choose from: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


__all__ = [
    "OBJECTIVES",
    "Objective",
    "TrainingBatch",
    "build_objective",
    "make_options",
    "objective_options",
    "options_type",
]
