"""Build the parts of a run (data, objective, network) from a TrainConfig, and load a trained run
back from its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shortcut_models.backbones import build_backbone, resolve_backbone
from shortcut_models.checkpoint import Checkpoint, all_finite, load_checkpoint
from shortcut_models.config import DataSpec, TrainConfig
from shortcut_models.data import DataSource, build_data
from shortcut_models.errors import UsageError
from shortcut_models.objectives import Objective, build_objective


def build_objective_for(config: TrainConfig, data: DataSource | DataSpec) -> Objective:
    return build_objective(
        config.objective, num_classes=data.num_classes, **config.objective_options
    )


def build_model_for(
    config: TrainConfig, data: DataSource | DataSpec, objective: Objective
) -> nn.Module:
    """The backbone with its data-dependent sizes filled in from the data source, and the options
    the run's objective asks for (time scale, guidance input) unless the config sets them."""
    cls, _ = resolve_backbone(config.backbone)
    try:
        fixed = cls.data_options(data.shape, data.num_classes)
    except ValueError as exc:
        raise UsageError(
            f"backbone '{config.backbone}' cannot take data '{data.name}': {exc}"
        ) from None
    clash = set(fixed) & set(config.backbone_options)
    if clash:
        raise UsageError(f"backbone option(s) {', '.join(sorted(clash))} are set by the data")
    options = {**objective.backbone_options(), **config.backbone_options}
    return build_backbone(config.backbone, **fixed, **options)


@dataclass(frozen=True)
class LoadedRun:
    """A trained run ready for sampling: its network (eval mode), objective, data spec and
    checkpoint (config, step)."""

    model: nn.Module
    objective: Objective
    spec: DataSpec
    checkpoint: Checkpoint


def load_run(
    path: str | Path, weights: str | None = None, device: torch.device | str = "cpu"
) -> LoadedRun:
    """Build the run's network and load its weights; the data itself is not opened.
    `weights`: "ema", "model" (raw), or None for the run's eval_weights."""
    if weights not in (None, "ema", "model"):
        raise UsageError(f"weights must be 'ema' or 'model', got {weights!r}")
    checkpoint = load_checkpoint(path)
    config = checkpoint.config
    weights = weights or config.eval_weights
    spec = checkpoint.data or DataSpec.of(build_data(config.data, config.data_options))
    objective = build_objective_for(config, spec)
    model = build_model_for(config, spec, objective)
    checkpoint.load_weights(model, weights)
    if not all_finite(model.state_dict().values()):
        raise UsageError(
            f"{checkpoint.path}: its {weights} weights hold NaN or inf values; "
            "nothing sampled from them would be meaningful"
        )
    return LoadedRun(model.to(device).eval(), objective, spec, checkpoint)
