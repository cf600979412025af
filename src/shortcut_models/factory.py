"""Build the parts of a run (data, objective, network) from a TrainConfig."""

from __future__ import annotations

from torch import nn

from shortcut_models.backbones import build_backbone, resolve_backbone
from shortcut_models.config import TrainConfig
from shortcut_models.data import DataSource, build_data
from shortcut_models.errors import UsageError
from shortcut_models.objectives import Objective, build_objective


def build_objective_for(config: TrainConfig, data: DataSource) -> Objective:
    return build_objective(
        config.objective, num_classes=data.num_classes, **config.objective_options
    )


def build_model_for(config: TrainConfig, data: DataSource, objective: Objective) -> nn.Module:
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


def build_parts(config: TrainConfig) -> tuple[DataSource, Objective, nn.Module]:
    data = build_data(config.data, config.data_options)
    objective = build_objective_for(config, data)
    return data, objective, build_model_for(config, data, objective)
