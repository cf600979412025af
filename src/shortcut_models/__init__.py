"""Shortcut models (Frans et al., 2024) in PyTorch: one network, one training phase,
sampling in 1, 2, 4, ..., 128 steps from the same checkpoint.

The public names load on first use (PEP 562), so `import shortcut_models` and the `shortcut`
command start without importing torch until they need it (and a Ctrl-C at start-up is one line).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RunOptions": "shortcut_models.execution",
    "SamplingRule": "shortcut_models.sampling",
    "TrainConfig": "shortcut_models.config",
    "Trainer": "shortcut_models.train",
    "build_backbone": "shortcut_models.backbones",
    "build_objective": "shortcut_models.objectives",
    "load_checkpoint": "shortcut_models.checkpoint",
    "load_run": "shortcut_models.factory",
    "register_dataset": "shortcut_models.data",
    "sample": "shortcut_models.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'shortcut_models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
