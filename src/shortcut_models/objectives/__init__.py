"""Training objectives. Adding one is one file plus one line in OBJECTIVES below: a dataclass
subclass of `Objective` whose fields, declared with `option(default, "help")`, are its options
(the `shortcut train` flags and the README's tables are generated from them), and whose
`targets(model, target_model, x1, y, generator)` returns a `TrainingBatch` (or which overrides
`loss(net, target_net, x1, y, generator)` when it makes its own network calls)."""

from __future__ import annotations

import dataclasses
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
    return {f.name for f in dataclasses.fields(_lookup(name)) if f.init}


def build_objective(name: str, **options: Any) -> Objective:
    """Instantiate a registered objective; unknown names or options are a UsageError."""
    cls = _lookup(name)
    unknown = set(options) - objective_options(name)
    if unknown:
        raise UsageError(f"objective '{name}' has no option(s): {', '.join(sorted(unknown))}")
    return cls(**options)


def _lookup(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective '{name}' (choose from: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


__all__ = ["OBJECTIVES", "Objective", "TrainingBatch", "build_objective", "objective_options"]
