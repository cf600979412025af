"""Build the parts of a run (data, objective, network) from a TrainConfig, and load a trained run
back from its checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shortcut_models.backbones import build_backbone
from shortcut_models.checkpoint import Checkpoint, all_finite, load_checkpoint
from shortcut_models.config import TrainConfig
from shortcut_models.data import DataSource, DataSpec, build_data
from shortcut_models.errors import UsageError
from shortcut_models.objectives import Objective, build_objective


def build_objective_for(config: TrainConfig, data: DataSource | DataSpec) -> Objective:
    return build_objective(
        config.objective.name,
        num_classes=data.num_classes,
        **dataclasses.asdict(config.objective.options),
    )


def build_model_for(
    config: TrainConfig, data: DataSource | DataSpec, objective: Objective
) -> nn.Module:
    """The backbone from its options, for the data's sample shape and classes, with the inputs
    the run's objective needs (a guidance scale, a second head)."""
    return build_backbone(
        config.backbone.name,
        config.backbone.options,
        tuple(data.shape),
        data.num_classes,
        data_name=data.name,
        **objective.network_inputs(),
    )


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
    weights = weights or config.training.eval_weights
    spec = checkpoint.data or DataSpec.of(build_data(config.data.name, config.data.options))
    objective = build_objective_for(config, spec)
    model = build_model_for(config, spec, objective)
    checkpoint.load_weights(model, weights)
    if not all_finite(model.state_dict().values()):
        raise UsageError(
            f"{checkpoint.path}: its {weights} weights hold NaN or inf values; "
            "nothing sampled from them would be meaningful"
        )
    return LoadedRun(model.to(device).eval(), objective, spec, checkpoint)


INIT_OBJECTIVES = ("shortcut", "ism", "meanflow")
# conditioning inputs a source network may lack: they start at zero, so the start equals it
NEW_INPUTS = ("cond.d_embedder.", "cond.w_embedder.")


def initialise_from(config: TrainConfig, data: DataSource, networks: list[nn.Module]) -> int:
    """Load run `config.training.init_from`'s EMA weights into every network of `networks` (the
    model and its EMA) after checking that the source has the same data and backbone (the first
    differing setting is the error). Embedders of inputs the source lacks (step size, guidance
    scale) keep their first layer and get a zero last layer: they add nothing until trained.
    Returns the source's step."""
    if config.objective.name not in INIT_OBJECTIVES:
        raise UsageError(
            f"--init-from applies to {', '.join(INIT_OBJECTIVES)}, not '{config.objective.name}'"
        )
    source = load_checkpoint(config.training.init_from)
    difference = _first_difference(source, config, data)
    if difference:
        raise UsageError(f"--init-from {source.path}: {difference}; they must match")
    state = source.tensors("ema")
    mine = networks[0].state_dict()
    missing = [k for k in mine if k not in state]
    unknown = [k for k in state if k not in mine]
    foreign = [k for k in missing if not k.startswith(NEW_INPUTS)] + unknown
    if foreign:
        raise UsageError(f"--init-from {source.path}: weights do not fit ({foreign[0]})")
    for key in missing:
        is_last = key.split(".")[-2] == "2"  # mlp.2: the embedder's output layer
        state[key] = torch.zeros_like(mine[key]) if is_last else mine[key].detach().clone()
    if not all_finite(state.values()):
        raise UsageError(f"--init-from {source.path}: its EMA weights hold NaN or inf values")
    for network in networks:
        network.load_state_dict(state)
    return source.step


def _first_difference(source: Checkpoint, config: TrainConfig, data: DataSource) -> str | None:
    """The first setting in which the source run differs from this one, in words."""
    theirs = source.config
    spec = source.data or DataSpec.of(build_data(theirs.data.name, theirs.data.options))
    for name, a, b in (
        ("data", theirs.data.name, config.data.name),
        ("data options", theirs.data.options, config.data.options),
        ("sample shape", tuple(spec.shape), tuple(data.shape)),
        ("number of classes", spec.num_classes, data.num_classes),
        ("backbone", theirs.backbone.name, config.backbone.name),
    ):
        if a != b:
            return f"its {name} is {a!r}, this run's {b!r}"
    mine, theirs_options = config.backbone.options, theirs.backbone.options
    for key in (f.name for f in dataclasses.fields(mine)):
        a, b = getattr(theirs_options, key, None), getattr(mine, key)
        if a != b:
            hint = " (pass --time-scale to match)" if key == "time_scale" else ""
            return f"its backbone option {key} is {a!r}, this run's {b!r}{hint}"
    return None
