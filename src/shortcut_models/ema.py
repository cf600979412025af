"""Exponential moving average of weights (the reference updates it after every step)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` to hold the average."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model; buffers are copied. Under FSDP both are sharded
    alike and each process averages its own shards."""
    ema_params = [_local(p) for p in ema.parameters()]
    torch._foreach_lerp_(ema_params, [_local(p.detach()) for p in model.parameters()], 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of the update after `updates` others under the usual warm-up: 0.1, 0.18, ...
    rising to `decay` (0.999 holds 7% of the initial weights after 2,600 steps without it)."""
    return min(decay, (1 + updates) / (10 + updates))


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor's shard
