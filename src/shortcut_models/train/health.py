"""The first step whose loss or gradient norm was not finite, kept on the device: a step makes
no host read for it, and the loop reads it at logging and saving steps, before any checkpoint
is written (so non-finite weights are never saved)."""

from __future__ import annotations

import math

import torch

from shortcut_models.errors import TrainingError


class NonFiniteWatch:
    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros(2, device=device)  # (loss, gradient norm) of that step

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Record step `step` (counted from 1) if it is the first with a non-finite value."""
        values = torch.stack([loss.float(), grad_norm.float()])
        take = (self.first < 0) & ~torch.isfinite(values).all()
        self.first = torch.where(take, torch.full_like(self.first, step), self.first)
        self.values = torch.where(take, values, self.values)

    def check(self, last_good: str) -> None:
        """Raise a TrainingError naming the first non-finite step, if there was one."""
        first = int(self.first)
        if first < 0:
            return
        loss, grad_norm = self.values.tolist()
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss is {loss} at step {first}; training stopped without saving, {last_good}"
            )
        raise TrainingError(
            f"the gradient norm is {grad_norm} at step {first} (the loss was {loss:.4g}); "
            f"training stopped without saving, {last_good}"
        )
