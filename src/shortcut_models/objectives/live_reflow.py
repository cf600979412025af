"""Live reflow, the reference's on-the-fly reflow baseline.

1/bootstrap_every of each batch gets reflow targets: the current network generates data from
fresh noise in 8 Euler steps (no gradient; with CFG when reflow_cfg_scale != 1), and these rows
learn the straight path from that noise to that output with d = 1 (one step). The other rows are
plain flow matching at d = 1/M. Only d = 1 and d = 1/M are ever trained, so sampling tells the
network d = 1 below M steps and d = 1/M at M steps, as the reference evaluates it (its
helper_eval.py: level 0 for n < M, level log2(M) at n = M).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models.errors import UsageError
from shortcut_models.guidance import guided_velocity
from shortcut_models.objectives.base import TrainingBatch, grid_times, interpolate, rows_of
from shortcut_models.objectives.flow_matching import FlowMatching
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

GENERATION_STEPS = 8


@dataclass
class LiveReflow(FlowMatching):
    name = "live_reflow"

    bootstrap_every: int = option(8)  # 1 / (fraction of the batch with reflow targets)
    reflow_cfg_scale: float = option(
        1.0, "CFG scale while generating the reflow targets (1: none; the reference: 4)"
    )
    # flow rows from the first B - B/b images (the reference's overlapping split) instead of
    # the last B - B/b (every image once)
    reference_batch_split: bool = option(False)

    def targets(self, model, target_net, x1, y, generator) -> TrainingBatch:
        n = x1.shape[0]
        nb = n // self.bootstrap_every
        if nb == 0:
            raise UsageError(
                f"batch size {n} leaves no reflow rows with bootstrap_every={self.bootstrap_every}"
            )
        x0, generated = self.generate(model, x1[:nb], rows_of(y, slice(0, nb)), generator)
        t = grid_times(nb, self.denoise_timesteps, generator, x1.device)
        rows = slice(0, n - nb) if self.reference_batch_split else slice(nb, n)
        flow = self.flow_part(x1[rows], rows_of(y, rows), generator, rows)
        return TrainingBatch(
            x_t=torch.cat([interpolate(x0, generated, t), flow.x_t]),
            t=torch.cat([t, flow.t]),
            d=torch.cat([torch.ones(nb, device=x1.device), flow.d]),
            y=None if y is None else torch.cat([y[:nb], flow.y]),
            target=torch.cat([generated - x0, flow.target]),
            groups={"reflow": slice(0, nb), "flow": slice(nb, n)},
        )

    @torch.no_grad()
    def generate(self, model, like, y, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, the network's 8-step Euler sample from it), with d = 1/M."""
        x0 = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return x0, self.generate_from(model, x0, y)

    @torch.no_grad()
    def generate_from(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor | None
    ) -> torch.Tensor:
        """The network's 8-step Euler sample from noise x0, told d = 1/M, with reflow CFG."""
        nb = x0.shape[0]
        d = torch.full((nb,), 1.0 / self.denoise_timesteps, device=x0.device)
        x = x0
        for i in range(GENERATION_STEPS):
            t = torch.full((nb,), i / GENERATION_STEPS, device=x0.device)
            v = guided_velocity(model, x, t, d, y, self.reflow_cfg_scale, self.null_class)
            x = x + v.to(x.dtype) / GENERATION_STEPS
        return x

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(power_of_two=True, max_steps=self.denoise_timesteps, below_max_d=1.0)
