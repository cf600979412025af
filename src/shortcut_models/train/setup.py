"""What a run trains, built (or restored) in one order, the same for every run: the data, the
objective, the network under the run's seed, its EMA (and twin EMA), a start from another run,
the objective's teacher, then the DDP / FSDP and torch.compile wrappers the step runs through."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models import logs, parallel
from shortcut_models.checkpoint import Checkpoint
from shortcut_models.config import TrainConfig
from shortcut_models.data import DataSource
from shortcut_models.devices import channels_last
from shortcut_models.distributed import Dist
from shortcut_models.ema import make_ema
from shortcut_models.errors import UsageError
from shortcut_models.execution import RunOptions
from shortcut_models.factory import (
    build_data,
    build_model_for,
    build_objective_for,
    initialise_from,
    load_run,
)
from shortcut_models.objectives import Objective
from shortcut_models.objectives.base import AttachContext

log = logs.get(__name__)


@dataclass
class Networks:
    data: DataSource
    objective: Objective
    model: nn.Module  # the trained weights
    ema: nn.Module  # what sampling uses by default
    target_ema: nn.Module | None  # the twin EMA that computes targets, if the objective has one
    emas: list[tuple[nn.Module, float]]  # every EMA with its decay (the evaluated one, then a twin)
    net: nn.Module  # what the step calls: the model behind DDP / FSDP and compile
    target_net: nn.Module  # what targets are computed with (the twin EMA, or the EMA)


def build_networks(
    config: TrainConfig,
    options: RunOptions,
    data: DataSource | None,
    checkpoint: Checkpoint | None,
    dist: Dist,
    device: torch.device,
    autocast: torch.dtype | None,
) -> Networks:
    """`autocast`: the run's autocast dtype (the Trainer's); it decides `--memory-format auto`."""
    data = data if data is not None else build_data(config.data.name, config.data.options)
    if checkpoint is not None:
        _warn_if_files_changed(checkpoint, data, config)
    objective = build_objective_for(config, data)
    if options.fsdp and not objective.shards_with_fsdp:
        raise UsageError(f"{config.objective.name} does not run under --fsdp; use DDP")
    with torch.random.fork_rng(devices=[]):  # seed the initial weights, leave global RNG alone
        torch.manual_seed(config.training.seed)
        model = build_model_for(config, data, objective).to(device)
    if getattr(model, "convolutional", False) and channels_last(
        options.memory_format, device, autocast
    ):
        model = model.to(memory_format=torch.channels_last)  # the EMA copies follow
    if options.recompute_activations:
        if not hasattr(model, "recompute_activations"):
            raise UsageError(f"recomputing activations needs a DiT, not {config.backbone.name}")
        model.recompute_activations = True
    ema = make_ema(model)
    if checkpoint is None and config.training.init_from:
        step = initialise_from(config, data, [model, ema])
        log.info(f"started from {config.training.init_from} (step {step})")
    if checkpoint is not None:
        checkpoint.load_weights(model, "model")
        checkpoint.load_weights(ema, "ema")
    context = AttachContext(
        model=model,
        ema=ema,
        config=config,
        data=data,
        device=device,
        fresh=checkpoint is None,
        load_run=load_run,
    )
    objective.attach(context)
    emas = [(ema, config.optimisation.ema_decay)]
    target_ema = None
    if objective.twin_ema_decay() > 0:
        target_ema = make_ema(ema)
        if checkpoint is not None:
            checkpoint.load_weights(target_ema, "target_ema")
        emas.append((target_ema, objective.twin_ema_decay()))
    copies = [average for average, _ in emas]
    net = parallel.distribute(model, copies, dist, device, options.fsdp)
    target_net = target_ema or ema
    if options.compile:
        net, target_net = torch.compile(net), torch.compile(target_net)
    return Networks(data, objective, model, ema, target_ema, emas, net, target_net)


def _warn_if_files_changed(checkpoint: Checkpoint, data: DataSource, config: TrainConfig) -> None:
    stored, now = checkpoint.data, data.fingerprint
    if stored is not None and stored.fingerprint and now and stored.fingerprint != now:
        log.warning(
            f"warning: the files of {getattr(config.data.options, 'path', None)} changed since the "
            "checkpoint was written (names or sizes); training continues on them as they are"
        )
