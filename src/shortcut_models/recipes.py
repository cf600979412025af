"""Named recipes: sets of training settings measured to work together, as plain values.

`shortcut train --recipe NAME` starts from a recipe's settings; any flag given beside it wins.
The run's config records the recipe's name and every value it set, so a checkpoint never depends
on this file staying the same. Each recipe says where its values were measured.
"""

from __future__ import annotations

from typing import Any

from shortcut_models.errors import UsageError

# name -> (one-line description, TrainConfig values, RunOptions values)
RECIPES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "cpu-small": (
        "class-conditional digits on a laptop CPU in minutes: the `shortcut demo` defaults "
        "(benchmarks/results/demo_ablation.md)",
        {
            "objective": "shortcut",
            "backbone": "unet",
            "backbone_options": {"channels": [16, 32, 64]},
            # self-consistency targets from the online weights: an EMA of 0.99 lags the few
            # thousand steps a CPU affords (1 step: 47 vs 367 FD-digits at 5 minutes)
            "objective_options": {"bootstrap_ema": False},
            "steps": 2300,
            "batch_size": 64,
            "lr": 1e-3,
            "ema_decay": 0.99,
            "lr_schedule": "cosine",
        },
        # 1.4x the images/s of fp32 for this U-Net on a CPU with AMX; emulated bf16 is slow
        {"precision": "bf16-if-native"},
    ),
    "cpu-dit-tiny": (
        "the demo's earlier defaults (until the cpu-small recipe): the paper's shortcut "
        "objective on a tiny DiT, kept to compare against",
        {
            "objective": "shortcut",
            "backbone": "DiT-T/4",
            "backbone_options": {},
            "objective_options": {},
            "steps": 2500,
            "batch_size": 64,
            "lr": 1e-3,
            "ema_decay": 0.99,
            "lr_schedule": "cosine",
        },
        {"precision": "fp32"},
    ),
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def recipe(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig values, RunOptions values) of a recipe; copies, safe to change."""
    if name not in RECIPES:
        raise UsageError(f"unknown recipe '{name}' (choose from: {', '.join(RECIPES)})")
    _, config, run = RECIPES[name]
    return _copy(config), dict(run)


def recipe_precision(name: str) -> str:
    """The precision a run started from recipe `name` trains in ("auto" without a recipe)."""
    return recipe(name)[1].get("precision", "auto") if name else "auto"


def describe(name: str) -> str:
    """'name: description; field=value, ...' as printed when a run starts from it."""
    config, run = recipe(name)
    values = ", ".join(f"{k}={v}" for k, v in {**config, **run}.items())
    return f"recipe {name}: {RECIPES[name][0]}; sets {values}"


def _copy(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (_copy(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
        for k, v in values.items()
    }
