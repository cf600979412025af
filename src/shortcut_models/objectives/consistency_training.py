"""Consistency training (Song et al., 2023) without a teacher, as the reference runs it.

Both points come from the same (noise, data) pair, x_t and x_{t+dt} on the straight path, and
the target is the velocity from x_t to the EMA student's data prediction at t + dt. The step dt
follows the reference's curriculum: training is cut into log2(M) equal stages and stage s uses
dt = 2^-s (t on the grid of dt), from one big step towards fine ones. The network is told the
constant d = 1/M (the reference's ignores d); sampling is multistep consistency sampling: predict
the data point, move to t + 1/n on the path from fresh noise to it (renoise_sampling; the
reference evaluates with plain Euler steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shortcut_models.objectives.base import (
    Objective,
    TrainingBatch,
    consistency_velocity,
    grid_times,
    interpolate,
    num_levels,
)
from shortcut_models.objectives.mixins import TwinTargetEMA
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule


@dataclass
class ConsistencyTraining(TwinTargetEMA, Objective):
    name = "consistency_training"

    renoise_sampling: bool = option(
        True, "multistep consistency sampling (off: plain Euler, as the reference evaluates)"
    )

    def stage(self) -> int:
        """0, 1, ..., log2(M) - 1 over training: the curriculum's level, dt = 2^-stage."""
        stages = num_levels(self.denoise_timesteps)
        return min(stages - 1, self.step * stages // max(1, self.total_steps))

    @torch.no_grad()
    def targets(self, model, target_net, x1, y, generator) -> TrainingBatch:
        n = x1.shape[0]
        sections = 2 ** self.stage()
        t = grid_times(n, sections, generator, x1.device)
        t2 = t + 1.0 / sections
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_t, x_t2 = interpolate(x0, x1, t), interpolate(x0, x1, t2)
        d = torch.full((n,), 1.0 / self.denoise_timesteps, device=x1.device)
        y = self.drop_labels(y, generator)
        target = consistency_velocity(x_t, t, x_t2, t2, target_net(x_t2, t2, d, y))
        return TrainingBatch(x_t=x_t, t=t, d=d, y=y, target=target, groups={"ct": slice(0, n)})

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(fixed_d=1.0 / self.denoise_timesteps, renoise=self.renoise_sampling)
