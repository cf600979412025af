"""Flow matching (rectified flow): the paper's plain many-step baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import (
    Objective,
    TrainingBatch,
    num_levels,
)
from shortcut_models.objectives.mixins import AdaptiveWeight, LogitNormalTimes
from shortcut_models.objectives.pairing import ot_pair
from shortcut_models.objectives.wavelet import auto_levels, wavelet_loss
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

TIME_SAMPLINGS = ("grid", "logit_normal")


@dataclass
class FlowMatching(LogitNormalTimes, AdaptiveWeight, Objective):
    """t on the grid k/M, the network told the smallest step d = 1/M, target x1 - (1 - 1e-5) x0.

    The reference's plain model ignores d altogether; telling it the constant 1/M is the same
    thing, and lets one backbone serve every objective.
    """

    name = "flow_matching"

    # iSM options (off by default: the paper's objective)
    ot_pairing: bool = option(
        False, "pair noise and data by minibatch optimal transport (iSM's sOT)"
    )
    ot_group: int = option(0, "rows per optimal-transport assignment (0: this process's batch)")
    wavelet_levels: int = option(
        0,
        "multi-level Haar wavelet loss with this many levels (0: MSE; -1: as many as the "
        "images allow, up to 3; vectors: MSE)",
    )
    time_sampling: str = option(
        "grid",
        "times of the flow rows: grid (k/M, the reference) or logit_normal (1 - sigmoid of "
        "N(mu, sigma), MeanFlow's)",
        choices=("grid", "logit_normal"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ot_group < 0:
            raise UsageError(f"ot_group must be >= 0, got {self.ot_group}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise UsageError(
                f"time_sampling must be one of {', '.join(TIME_SAMPLINGS)}, "
                f"got {self.time_sampling!r}"
            )
        if self.wavelet_levels < -1:
            raise UsageError(f"wavelet_levels must be >= -1, got {self.wavelet_levels}")

    def targets(
        self,
        model: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
    ) -> TrainingBatch:
        batch = self.flow_part(x1, y, generator)
        batch.groups = {"flow": slice(0, x1.shape[0])}
        return batch

    def flow_part(
        self,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
        rows: slice = slice(None),
    ) -> TrainingBatch:
        """Flow-matching rows for data x1, which are `rows` of the batch `loss` was given."""
        n, m = x1.shape[0], self.denoise_timesteps
        if self.time_sampling == "logit_normal":
            t = 1.0 - self.logit_normal((n,), generator, x1.device)
        else:
            t = torch.randint(0, m, (n,), generator=generator, device=x1.device).float() / m
        return self.straight_batch(self.noise(x1, generator, rows), x1, t, y, generator)

    def noise(
        self, x1: torch.Tensor, generator: torch.Generator, rows: slice = slice(None)
    ) -> torch.Tensor:
        """Gaussian noise for x1 (`rows` of the batch `loss` was given), re-paired by optimal
        transport if asked: the noise the trainer drew and paired on the host (`host_noise`),
        else drawn here and paired through the host (a direct call of `loss` or `targets`)."""
        if self.ot_pairing and self.paired is not None:
            return self.paired[rows].to(x1.dtype)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        return ot_pair(x0, x1, self.ot_group) if self.ot_pairing else x0

    def host_noise(self, x1: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """With OT pairing: noise for the host batch x1, paired with it over groups of
        `ot_group` rows (0: the whole batch) before either reaches the device."""
        if not self.ot_pairing:
            return None
        x0 = torch.randn(x1.shape, generator=generator, dtype=torch.float32)
        return ot_pair(x0, x1.float(), self.ot_group)

    def per_sample_loss(self, pred: torch.Tensor, batch: TrainingBatch) -> torch.Tensor:
        levels = auto_levels(pred.shape) if self.wavelet_levels == -1 else self.wavelet_levels
        if levels == 0:
            err = super().per_sample_loss(pred, batch)
        else:
            err = wavelet_loss(pred.float() - batch.target.float(), levels)
        return self.weighted(err, pred[0].numel())

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(
            power_of_two=False, max_steps=None, fixed_d=1.0 / self.denoise_timesteps
        )

    @property
    def num_levels(self) -> int:
        return num_levels(self.denoise_timesteps)
