"""Flow matching (rectified flow): the paper's plain many-step baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models.objectives.base import (
    Objective,
    TrainingBatch,
)
from shortcut_models.sampling import SamplingSpec


@dataclass
class FlowMatching(Objective):
    """t on the grid k/M, the network told the smallest step d = 1/M, target x1 - (1 - 1e-5) x0.

    The reference's plain model ignores d altogether; telling it the constant 1/M is the same
    thing, and lets one backbone serve every objective.
    """

    name = "flow_matching"

    def targets(
        self,
        model: nn.Module,
        ema_model: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
    ) -> TrainingBatch:
        batch = self.flow_part(x1, y, generator)
        batch.parts = {"flow": slice(0, x1.shape[0])}
        return batch

    def flow_part(
        self, x1: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator
    ) -> TrainingBatch:
        n, m = x1.shape[0], self.denoise_timesteps
        t = torch.randint(0, m, (n,), generator=generator, device=x1.device).float() / m
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        return self.straight_batch(x0, x1, t, y, generator)

    def sampling_spec(self) -> SamplingSpec:
        return SamplingSpec(
            power_of_two=False, max_steps=None, fixed_d=1.0 / self.denoise_timesteps
        )

    @property
    def num_levels(self) -> int:
        return int(math.log2(self.denoise_timesteps))
