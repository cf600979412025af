"""Teachers for the distillation baselines and reflow: a trained checkpoint of the same network.

A teacher must be a many-step model (flow matching, or shortcut) trained with the same backbone
on data of the same shape and classes; anything else is a clear error before training starts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import AttachContext

TEACHER_OBJECTIVES = ("flow_matching", "shortcut")


def load_teacher(path: str | Path | None, context: AttachContext, who: str) -> nn.Module:
    """The teacher's EMA network, frozen, on the run's device."""
    if not path:
        raise UsageError(f"{who} needs a teacher: pass --teacher RUN (a trained flow-matching run)")
    run = context.load_run(path, "ema", context.device)
    config, spec = run.checkpoint.config, run.spec
    if config.objective.name not in TEACHER_OBJECTIVES:
        raise UsageError(
            f"teacher {path} was trained with '{config.objective.name}'; {who} needs one of "
            f"{', '.join(TEACHER_OBJECTIVES)}"
        )
    mine = context.config
    if (config.backbone.name, config.backbone.options) != (
        mine.backbone.name,
        mine.backbone.options,
    ):
        raise UsageError(
            f"teacher {path} uses backbone {config.backbone.name} {config.backbone.options}, "
            f"this run {mine.backbone.name} {mine.backbone.options}; they must match"
        )
    if (tuple(spec.shape), spec.num_classes) != (
        tuple(context.data.shape),
        context.data.num_classes,
    ):
        raise UsageError(
            f"teacher {path} was trained on data of shape {tuple(spec.shape)} with "
            f"{spec.num_classes} classes, this run's data is {tuple(context.data.shape)} with "
            f"{context.data.num_classes}"
        )
    return run.model.requires_grad_(False).eval()


def initialise_student(context: AttachContext, teacher: nn.Module) -> None:
    """Start both the student and its EMA from the teacher's weights (fresh runs only)."""
    if context.fresh:
        state = teacher.state_dict()
        context.model.load_state_dict(state)
        context.ema.load_state_dict(state)


def frozen_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).requires_grad_(False).eval()


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    for mine, theirs in zip(
        target.state_dict().values(), source.state_dict().values(), strict=True
    ):
        mine.copy_(theirs)
