"""Named recipes: sets of training settings measured to work together, as plain values.

`shortcut train --recipe NAME` starts from a recipe's settings; any flag given beside it wins.
The run's config records the recipe's name and every value it set, so a checkpoint never depends
on this file staying the same. Each recipe says where its values were measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shortcut_models.backbones import backbone_kind
from shortcut_models.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """A named set of settings. `objective_options` and `backbone_options` hold options per
    objective name and per backbone kind ("dit", "mlp", "unet"), applied to whichever the run
    trains, so one recipe (`reference`) can set the reference's choices for every method."""

    description: str
    config: dict[str, Any]  # TrainConfig values
    run: dict[str, Any] = field(default_factory=dict)  # RunOptions values (precision)
    objective_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    backbone_options: dict[str, dict[str, Any]] = field(default_factory=dict)


# Every choice of the official code (kvfrans/shortcut-models) where our defaults differ; the
# README's table "where our defaults differ from the reference" gives the reason for each, and
# benchmarks/parity.py checks them against the official code.
REFERENCE_CONFIG: dict[str, Any] = {
    "lr": 1e-4,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 0.1,
    "warmup_steps": 0,
    "lr_schedule": "constant",
    "grad_clip": 0.0,
    "ema_decay": 0.999,
    "eval_weights": "model",  # its use_ema=0: evaluation with the raw weights
}
NO_LABEL_DROPOUT = {"class_dropout_prob": 0.0}
REFERENCE_OBJECTIVES: dict[str, dict[str, Any]] = {
    "shortcut": {
        "reference_batch_split": True,
        "rotate_levels": False,  # fewer bootstrap rows than levels: all at level 0
        "bootstrap_ema": True,
        "bootstrap_cfg": False,
        "bootstrap_cfg_scale": 4.0,  # its cfg_scale
    },
    "live_reflow": {"reference_batch_split": True, "reflow_cfg_scale": 4.0},
    "progressive_distillation": {**NO_LABEL_DROPOUT, "clip_target": False, "step_input": False},
    "consistency_distillation": NO_LABEL_DROPOUT,
    "consistency_training": {**NO_LABEL_DROPOUT, "renoise_sampling": False},
}
REFERENCE_DIT = {
    "time_scale": 1.0,
    "attention_scale": "linear",
    "block_adaln_init": "xavier",
    "qkv_init": "separate",
    "position_order": "col-row",
}
REFERENCE_BACKBONES: dict[str, dict[str, Any]] = {
    "dit": REFERENCE_DIT,
    "mlp": {"time_scale": 1.0},
    "unet": {"time_scale": 1.0},
}
# its DiT computes in bfloat16 (parameters in float32)
REFERENCE_RUN = {"precision": "bf16-if-native"}


def paper_preset(what: str, backbone: str, batch: int, steps: int, guided: bool) -> Recipe:
    """An official run (the official README's commands): the reference recipe on latents."""
    shortcut = dict(REFERENCE_OBJECTIVES["shortcut"])
    if guided:  # --model.cfg_scale 1.5 --model.class_dropout_prob 0.1 --model.bootstrap_cfg 1
        shortcut.update(bootstrap_cfg=True, bootstrap_cfg_scale=1.5, class_dropout_prob=0.1)
    else:  # --model.cfg_scale 0 --model.class_dropout_prob 1 --model.num_classes 1
        shortcut.update(class_dropout_prob=1.0)
    return Recipe(
        f"the paper's {what} run ({backbone}, batch {batch}, {steps:,} steps) on latents from "
        "`shortcut encode`; a GPU job",
        {
            **REFERENCE_CONFIG,
            "data": "latents",
            "objective": "shortcut",
            "backbone": backbone,
            "batch_size": batch,
            "steps": steps,
        },
        {"precision": "bf16"},
        {"shortcut": shortcut},
        {"dit": REFERENCE_DIT},
    )


RECIPES: dict[str, Recipe] = {
    "cpu-small": Recipe(
        "class-conditional digits on a laptop CPU in minutes: the `shortcut demo` defaults "
        "(benchmarks/results/demo_ablation.md)",
        {
            "objective": "shortcut",
            "backbone": "unet",
            # 2x2 pixels folded into channels: every level at half the resolution, 3x the
            # training images/s of the same widths on 32x32, the lever that most improved one
            # step at a fixed wall clock on a CPU without bf16 hardware
            "backbone_options": {"channels": [16, 32, 64], "patch": 2},
            # self-consistency targets from the online weights: an EMA of 0.99 lags the few
            # thousand steps a CPU affords (1 step: 47 vs 367 FD-digits at 5 minutes)
            "objective_options": {"bootstrap_ema": False},
            # a wall-clock budget: the step count is planned from the measured rate, so the
            # demo ends on time on any machine (`steps` applies with --minutes 0)
            "minutes": 8.0,
            "steps": 4000,
            "batch_size": 64,
            "lr": 1e-3,
            "ema_decay": 0.99,
            "lr_schedule": "cosine",
        },
        # fp32 on every CPU: with the folded U-Net bf16 autocast gains nothing even on AMX;
        # channels-last speeds up oneDNN's fp32 convolutions (benchmarks/results/demo_ablation.md)
        {"precision": "fp32", "memory_format": "auto"},
    ),
    "cpu-dit-tiny": Recipe(
        "the paper's shortcut objective (EMA bootstrap targets) on a tiny DiT in fp32: the "
        "point cpu-small is compared with (benchmarks/results/demo_ablation.md)",
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
    "reference": Recipe(
        "exactly the official code's choices for whichever objective and backbone you train "
        "(optimizer, EMA, raw weights at evaluation, batch split, unscaled t, DiT attention "
        "and initialisation, each baseline's label dropout, CFG and clipping)",
        REFERENCE_CONFIG,
        REFERENCE_RUN,
        REFERENCE_OBJECTIVES,
        REFERENCE_BACKBONES,
    ),
    "celeba-hq-256": paper_preset("CelebA-HQ 256 (unconditional)", "DiT-B/2", 64, 410_000, False),
    "imagenet-256-dit-b": paper_preset("ImageNet 256", "DiT-B/2", 256, 810_000, True),
    "imagenet-256-dit-xl": paper_preset("ImageNet 256", "DiT-XL/2", 256, 810_000, True),
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def recipe(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig values, RunOptions values) of a recipe; copies, safe to change."""
    found = _get(name)
    return _copy(found.config), dict(found.run)


def recipe_options(
    name: str, objective: str, backbone: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(objective options, backbone options) the recipe sets for this objective and backbone."""
    found = _get(name)
    kind = backbone_kind(backbone)
    return (
        _copy(found.objective_options.get(objective, {})),
        _copy(found.backbone_options.get(kind, {})),
    )


def apply_recipe(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Config values with the recipe's options for the objective and backbone they name added
    under the options already there (those win)."""
    objective_options, backbone_options = recipe_options(
        name, values["objective"], values["backbone"]
    )
    return {
        **values,
        "objective_options": {**objective_options, **values["objective_options"]},
        "backbone_options": {**backbone_options, **values["backbone_options"]},
    }


def recipe_precision(name: str) -> str:
    """The precision a run started from recipe `name` trains in ("auto" without a recipe)."""
    return recipe(name)[1].get("precision", "auto") if name else "auto"


def describe(name: str, objective: str = "", backbone: str = "") -> str:
    """'name: description; sets field=value, ...' as printed when a run starts from it."""
    config, run = recipe(name)
    values = {**config, **run}
    if objective and backbone:
        objective_options, backbone_options = recipe_options(name, objective, backbone)
        values.update({f"{objective}.{k}": v for k, v in objective_options.items()})
        values.update({f"{backbone}.{k}": v for k, v in backbone_options.items()})
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    return f"recipe {name}: {_get(name).description}; sets {shown}"


def _get(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"unknown recipe '{name}' (choose from: {', '.join(RECIPES)})")
    return RECIPES[name]


def _copy(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (_copy(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
        for k, v in values.items()
    }
