"""Named recipes: sets of training settings measured to work together, as plain values.

`shortcut train --recipe NAME` starts from a recipe's settings; any flag given beside it wins.
The run's config records the recipe's name and every value it set, so a checkpoint never depends
on this file staying the same. Each recipe says where its values were measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from shortcut_models.backbones import backbone_kind
from shortcut_models.errors import UsageError
from shortcut_models.objectives import objective_options


@dataclass(frozen=True)
class Recipe:
    """A named set of settings: `tree`, a partial config tree as `TrainConfig.to_dict` writes it
    (its `run` section holds RunOptions values), and options per objective name and per backbone
    kind ("dit", "mlp", "unet") for whichever the run trains, so that one recipe (`reference`)
    can set the reference's choices for every method."""

    description: str
    tree: dict[str, Any]
    objectives: dict[str, dict[str, Any]] = field(default_factory=dict)
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict)


# Every choice of the official code (kvfrans/shortcut-models) where our defaults differ; the
# table "where our defaults differ from the reference" in docs/fidelity.md gives the reason for
# each, and benchmarks/parity.py checks them against the official code.
REFERENCE_OPTIMISATION: dict[str, Any] = {
    "lr": 1e-4,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 0.1,
    "warmup_steps": 0,
    "lr_schedule": "constant",
    "grad_clip": 0.0,
    "ema_decay": 0.999,
}
REFERENCE_TRAINING = {"eval_weights": "model"}  # its use_ema=0: evaluation with the raw weights
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
            "data": {"name": "latents"},
            "objective": {"name": "shortcut"},
            "backbone": {"name": backbone},
            "training": {**REFERENCE_TRAINING, "batch_size": batch, "steps": steps},
            "optimisation": REFERENCE_OPTIMISATION,
            "run": {"precision": "bf16"},
        },
        {"shortcut": shortcut},
        {"dit": REFERENCE_DIT},
    )


# cpu-small's network, optimiser and run settings, shared by the CPU recipes that train it
CPU_UNET = {"name": "unet", "options": {"channels": [16, 32, 64], "patch": 2}}
CPU_OPTIMISATION = {"lr": 1e-3, "ema_decay": 0.99, "lr_schedule": "cosine"}
CPU_RUN = {"precision": "fp32", "memory_format": "auto"}

RECIPES: dict[str, Recipe] = {
    "cpu-small": Recipe(
        "class-conditional digits on a laptop CPU in minutes: the `shortcut demo` defaults "
        "(benchmarks/results/demo_ablation.md)",
        {
            # self-consistency targets from the online weights: an EMA lags the few thousand
            # steps a CPU affords (benchmarks/results/code_notes.md)
            "objective": {"name": "shortcut", "options": {"bootstrap_ema": False}},
            # 2x2 pixels folded into channels: every level at half the resolution, the lever
            # that most improved one step at a fixed wall clock (code_notes.md)
            "backbone": CPU_UNET,
            # a wall-clock budget: the step count is planned from the measured rate, so the
            # demo ends on time on any machine (`steps` applies with --minutes 0)
            "training": {"minutes": 8.0, "steps": 4000, "batch_size": 64},
            "optimisation": CPU_OPTIMISATION,
            # fp32 on every CPU, channels-last for oneDNN's convolutions (code_notes.md)
            "run": CPU_RUN,
        },
    ),
    "cpu-colour": Recipe(
        "small colour images (icons, emoji), labelled or not, in half an hour of a CPU: "
        "MeanFlow, the better one-step objective measured on OpenMoji at 30 minutes, on "
        "cpu-small's network at twice the width (benchmarks/results/demo_openmoji.md)",
        {
            "objective": {"name": "meanflow", "options": {}},
            # twice cpu-small's width: half the steps in 30 minutes, level at one step and
            # 23 / 15 FID better at 4 / 128 steps on OpenMoji (demo_openmoji.md)
            "backbone": {**CPU_UNET, "options": {**CPU_UNET["options"], "channels": [32, 64, 128]}},
            "training": {"minutes": 30.0, "steps": 6500, "batch_size": 64},
            "optimisation": CPU_OPTIMISATION,
            "run": CPU_RUN,
        },
    ),
    "cpu-dit-tiny": Recipe(
        "the paper's shortcut objective (EMA bootstrap targets) on a tiny DiT in fp32: the "
        "point cpu-small is compared with (benchmarks/results/demo_ablation.md)",
        {
            "objective": {"name": "shortcut", "options": {}},
            "backbone": {"name": "DiT-T/4", "options": {}},
            "training": {"steps": 2500, "batch_size": 64},
            "optimisation": {"lr": 1e-3, "ema_decay": 0.99, "lr_schedule": "cosine"},
            "run": {"precision": "fp32"},
        },
    ),
    "reference": Recipe(
        "exactly the official code's choices for whichever objective and backbone you train "
        "(optimizer, EMA, raw weights at evaluation, batch split, unscaled t, DiT attention "
        "and initialisation, each baseline's label dropout, CFG and clipping)",
        {
            "training": REFERENCE_TRAINING,
            "optimisation": REFERENCE_OPTIMISATION,
            "run": REFERENCE_RUN,
        },
        REFERENCE_OBJECTIVES,
        REFERENCE_BACKBONES,
    ),
    "celeba-hq-256": paper_preset("CelebA-HQ 256 (unconditional)", "DiT-B/2", 64, 410_000, False),
    "imagenet-256-dit-b": paper_preset("ImageNet 256", "DiT-B/2", 256, 810_000, True),
    "imagenet-256-dit-xl": paper_preset("ImageNet 256", "DiT-XL/2", 256, 810_000, True),
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def recipe(name: str) -> Recipe:
    """The recipe called `name`; an unknown name is a UsageError listing the choices."""
    if name not in RECIPES:
        raise UsageError(f"unknown recipe '{name}' (choose from: {', '.join(RECIPES)})")
    return RECIPES[name]


def recipe_tree(name: str, objective: str, backbone: str, carry: bool = False) -> dict[str, Any]:
    """The recipe's partial tree for a run that trains `objective` on `backbone` (the one place
    a recipe is resolved): its options for that objective name and backbone kind, under the
    options it sets for its own objective and backbone. Where the run trains another objective
    or backbone than the recipe names, the recipe's own options for it do not carry over;
    with `carry` (a comparison) an objective keeps those it also has (cpu-small's online
    bootstrap targets reach ism). A section names the run's objective or backbone only where the
    recipe names one, so that the recipe is not the source of a name it leaves to the defaults."""
    found = recipe(name)
    tree = copy.deepcopy(found.tree)
    own = tree.get("objective", {})
    options = dict(found.objectives.get(objective, {}))
    if own.get("name", objective) == objective:
        options.update(own.get("options", {}))
    elif carry:
        accepted = objective_options(objective)
        options = {k: v for k, v in own.get("options", {}).items() if k in accepted} | options
    tree["objective"] = {**({"name": objective} if "name" in own else {}), "options": options}
    own = tree.get("backbone", {})
    options = dict(found.backbones.get(backbone_kind(backbone), {}))
    if own.get("name", backbone) == backbone:
        options.update(own.get("options", {}))
    tree["backbone"] = {**({"name": backbone} if "name" in own else {}), "options": options}
    return tree


def describe(name: str, objective: str = "", backbone: str = "") -> str:
    """'name: description; sets section.field=value, ...' as printed when a run starts from it."""
    tree = recipe_tree(name, objective, backbone) if objective and backbone else recipe(name).tree
    shown = []
    for section, values in tree.items():
        for key, value in values.items():
            if key == "options":
                owner = {"objective": objective, "backbone": backbone}.get(section) or section
                shown += [f"{owner}.{k}={v}" for k, v in value.items()]
            else:
                shown.append(f"{section}.{key}={value}")
    return f"recipe {name}: {recipe(name).description}; sets {', '.join(shown)}"
