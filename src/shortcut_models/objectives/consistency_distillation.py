"""Consistency distillation (Song et al., 2023) in the reference's velocity form.

From x_t the frozen flow-matching teacher takes one Euler step of 1/M; the EMA student predicts
the data point from there, and the target is the velocity from x_t straight to that prediction:
    x' = x_t + v_teacher(x_t, t) / M,   x1_hat = x' + (1 - t - 1/M) s_ema(x', t + 1/M),
    target = (x1_hat - x_t) / (1 - t).
The student starts from the teacher's weights. The network is told the constant d = 1/M (the
reference's network ignores d) and is sampled with plain Euler steps, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shortcut_models.objectives.base import (
    AttachContext,
    Objective,
    TrainingBatch,
    consistency_velocity,
    grid_times,
    interpolate,
)
from shortcut_models.objectives.mixins import TwinTargetEMA
from shortcut_models.objectives.teacher import initialise_student, load_teacher
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule


@dataclass
class ConsistencyDistillation(TwinTargetEMA, Objective):
    name = "consistency_distillation"
    needs = "teacher"

    teacher: str = option("", path=True)  # run folder or checkpoint of the teacher
    teacher_network: nn.Module | None = field(default=None, init=False, repr=False)

    def attach(self, context: AttachContext) -> None:
        self.teacher_network = load_teacher(self.teacher, context, self.name)
        initialise_student(context, self.teacher_network)

    @torch.no_grad()
    def targets(self, model, target_net, x1, y, generator) -> TrainingBatch:
        n, m = x1.shape[0], self.denoise_timesteps
        t = grid_times(n, m, generator, x1.device)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_t = interpolate(x0, x1, t)
        d = torch.full((n,), 1.0 / m, device=x1.device)
        y = self.drop_labels(y, generator)
        target = self.consistency_target(target_net, x_t, t, y)
        return TrainingBatch(x_t=x_t, t=t, d=d, y=y, target=target, groups={"cd": slice(0, n)})

    @torch.no_grad()
    def consistency_target(
        self, target_net: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None
    ) -> torch.Tensor:
        """One teacher step of 1/M from (x_t, t), then the EMA student's data prediction."""
        m = self.denoise_timesteps
        d = torch.full_like(t, 1.0 / m)
        v_teacher = self.teacher_network(x_t, t, d, y)
        x_t2 = torch.clamp(x_t + v_teacher / m, -4.0, 4.0)
        t2 = t + 1.0 / m
        return consistency_velocity(x_t, t, x_t2, t2, target_net(x_t2, t2, d, y))

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(fixed_d=1.0 / self.denoise_timesteps)
