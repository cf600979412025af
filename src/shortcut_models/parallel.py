"""The network across processes: DDP by default, FSDP (`fully_shard`) for models too big to copy.

Checkpoints always hold full, unsharded tensors and the optimizer state by parameter index, so a
run saved on N processes resumes or samples on any other number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from shortcut_models.distributed import Dist, unwrap
from shortcut_models.errors import UsageError

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(module: nn.Module) -> None:
    """FSDP2 in place: each transformer block is one unit (gathered just before it runs)."""
    for block in getattr(module, "blocks", []):
        fully_shard(block)
    fully_shard(module)


def distribute(
    model: nn.Module, copies: list[nn.Module], info: Dist, device: torch.device, fsdp: bool
) -> nn.Module:
    """The module to train through: DDP around `model`, or `model` and its no-grad `copies`
    (EMAs) sharded in place alike, so each process averages its own shards."""
    if fsdp:
        if not info.enabled:
            raise UsageError("--fsdp shards over several processes: launch with torchrun")
        for module in (model, *copies):
            shard(module)
        return model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return model


def full_state(module: nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    """Unsharded weights (a collective under FSDP: every rank calls it, rank 0 gets them)."""
    if not fsdp:
        return module.state_dict()
    return get_model_state_dict(module, options=FULL)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> Mapping:
    """{"state": {parameter index: {...}}} with full tensors (a collective under FSDP; only
    rank 0 receives the tensors)."""
    if not fsdp:
        return optimizer.state_dict()
    by_name = get_optimizer_state_dict(model, optimizer, options=FULL).get("state", {})
    names = [name for name, _ in model.named_parameters()]
    return {"state": {i: by_name[n] for i, n in enumerate(names) if n in by_name}}


def load_optimizer_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[int, dict[str, torch.Tensor]],
    fsdp: bool,
) -> None:
    """Restore the index-keyed state saved by `full_optimizer_state` (sharding it under FSDP)."""
    groups = optimizer.state_dict()["param_groups"]
    if not fsdp:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        return
    names = [name for name, _ in model.named_parameters()]
    by_name = {
        "state": {names[i]: value for i, value in state.items()},
        "param_groups": [dict(g, params=[names[i] for i in g["params"]]) for g in groups],
    }
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=by_name, options=options)


def gradient_sync(
    net: nn.Module, model: nn.Module, info: Dist, fsdp: bool, sync: bool
) -> contextlib.AbstractContextManager:
    """Around a micro-batch's backward: skip the gradient all-reduce unless `sync` (the last
    micro-batch of a step)."""
    if sync or not info.enabled:
        return contextlib.nullcontext()
    if fsdp:
        model.set_requires_gradient_sync(False)
        return _restore_sync(model)
    return unwrap(net, through_ddp=False).no_sync()  # DDP


@contextlib.contextmanager
def _restore_sync(model: nn.Module) -> Iterator[None]:
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
