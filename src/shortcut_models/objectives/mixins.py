"""Options several objectives share, each a dataclass mixin listed before the objective's base
class (its `__post_init__` checks them, then calls the next): a twin EMA for the targets,
logit-normal times, MeanFlow's adaptive loss weighting."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import adaptive_loss
from shortcut_models.options import option


@dataclass
class TwinTargetEMA:
    """The option of objectives whose targets come from `target_net` (a mixin listed before the
    objective's base class)."""

    target_ema_decay: float = option(
        0.0,
        "twin EMA (iSM): a second EMA with this decay computes the targets while --ema-decay's "
        "is evaluated (0: targets from the one EMA)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.target_ema_decay < 1.0:
            raise UsageError(f"target_ema_decay must be in [0, 1), got {self.target_ema_decay}")

    def twin_ema_decay(self) -> float:
        return self.target_ema_decay


@dataclass
class LogitNormalTimes:
    """The options of objectives that draw times logit-normal (a mixin listed before the
    objective's base class): flow matching's `--time-sampling logit_normal`, MeanFlow, imf."""

    time_mu: float = option(-0.4, "logit-normal time mean (< 0 leans to the data end)")
    time_sigma: float = option(1.0, "logit-normal time std")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.time_sigma > 0:
            raise UsageError(f"time_sigma must be positive, got {self.time_sigma}")

    def logit_normal(
        self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """sigmoid(mu + sigma N(0, 1)) of `shape`: in (0, 1), leaning to 0 for mu < 0."""
        normal = torch.randn(shape, generator=generator, device=device)
        return torch.sigmoid(self.time_mu + self.time_sigma * normal)

    def logit_normal_steps(
        self, n: int, num_mean: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, d) of n rows (MeanFlow, imf): both ends of a step drawn logit-normal in MeanFlow's
        time tau = 1 - t (noise at tau = 1), the step between them for the first `num_mean`
        rows and d = 0 (an instantaneous velocity) for the rest."""
        ends = self.logit_normal((2, n), generator, device)  # MeanFlow's tau in (0, 1)
        tau_t, tau_r = ends.max(0).values, ends.min(0).values
        tau_r = torch.cat([tau_r[:num_mean], tau_t[num_mean:]])
        return 1.0 - tau_t, tau_t - tau_r


@dataclass
class AdaptiveWeight:
    """The options of MeanFlow's adaptive loss weighting (`adaptive_loss`; a mixin listed before
    the objective's base class)."""

    norm_p: float = option(
        0.0, "adaptive loss power p: weight 1 / (||err||^2 + c)^p, ||.||^2 summed (0: plain loss)"
    )
    norm_c: float = option(1e-3, "adaptive loss constant c")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.norm_c > 0 or self.norm_p < 0:
            raise UsageError(
                f"norm_c must be positive and norm_p >= 0, got {self.norm_c}, {self.norm_p}"
            )

    def weighted(self, err: torch.Tensor, dims: int) -> torch.Tensor:
        """`adaptive_loss` of per-sample errors `err` over samples of `dims` numbers."""
        return adaptive_loss(err, self.norm_p, self.norm_c, dims)
