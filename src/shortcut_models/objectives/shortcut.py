"""Shortcut models (Frans et al., 2024): flow matching plus self-consistency across step sizes.

Where we differ from the reference by default (each with an option that restores it; the table
of differences in docs/fidelity.md says why): the bootstrap and flow rows are disjoint parts of
the batch (`reference_batch_split`), their noise and times are drawn independently, and with
fewer bootstrap rows than step levels the rows' levels rotate with the step so every level is
trained (`rotate_levels`; the reference puts them all at level 0, its issue #11).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shortcut_models import logs
from shortcut_models.errors import UsageError
from shortcut_models.guidance import guided_velocity
from shortcut_models.objectives.base import (
    TrainingBatch,
    broadcast,
    grid_times,
    interpolate,
    num_levels,
    rows_of,
)
from shortcut_models.objectives.flow_matching import FlowMatching
from shortcut_models.objectives.mixins import TwinTargetEMA
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

log = logs.get(__name__)

CLIP = 4.0  # the reference clips the intermediate point and the target to [-4, 4]


def bootstrap_levels(
    num_bootstrap: int, denoise_timesteps: int, rotate_from: int | None = None
) -> torch.Tensor:
    """Step levels k (step size d = 2^-k) of the bootstrap rows, exactly as the reference spreads
    them: levels log2(M)-1, ..., 0 in equal groups of num_bootstrap // log2(M), the remainder at 0.

    With fewer rows than levels the reference's groups are empty and every row is at level 0;
    given `rotate_from` (a counter such as the training step) the rows instead take consecutive
    levels starting at position rotate_from * num_bootstrap of the cycle log2(M)-1, ..., 0.
    """
    count = num_levels(denoise_timesteps)
    group = num_bootstrap // count
    if group == 0 and rotate_from is not None:
        position = (rotate_from * num_bootstrap + torch.arange(num_bootstrap)) % count
        return count - 1 - position
    levels = torch.arange(count - 1, -1, -1).repeat_interleave(group)
    return torch.cat([levels, torch.zeros(num_bootstrap - levels.numel(), dtype=levels.dtype)])


LEVEL_SAMPLINGS = ("groups", "coarse")


def coarse_levels(
    num_bootstrap: int, count: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Levels drawn at random with P(k) proportional to 2^-k over 0 .. count-1 (log2(M)
    levels): half the bootstrap rows train the one-step level, a quarter the two-step level, and
    so on; every level appears at any batch size (in expectation), unlike fixed groups with fewer
    rows than levels."""
    weights = torch.pow(2.0, -torch.arange(count, dtype=torch.float32, device=device))
    return torch.multinomial(weights, num_bootstrap, replacement=True, generator=generator)


@dataclass
class Shortcut(TwinTargetEMA, FlowMatching):
    """The first B // bootstrap_every rows get self-consistency targets, the rest flow matching.

    A bootstrap row at level k (d = 2^-k) has t on the grid of d, and its target is the mean of two
    half steps of the network itself at level k + 1, clipped, without gradient:
        v1 = s(x_t, t, d/2);  x' = clip(x_t + d/2 v1);  v2 = s(x', t + d/2, d/2);
        target = clip((v1 + v2) / 2).
    """

    name = "shortcut"

    bootstrap_every: int = option(
        8, "1 in this many rows of a batch gets self-consistency (reflow) targets"
    )
    level_sampling: str = option(
        "groups",
        "step levels of the bootstrap rows: groups (the reference's equal groups) or coarse "
        "(random, P(k) ~ 2^-k: more rows for the few-step levels)",
        choices=("groups", "coarse"),
    )
    bootstrap_ema: bool = option(True, "compute self-consistency targets with the EMA weights")
    bootstrap_cfg: bool = option(
        False, "apply CFG inside the finest-level targets, as the reference's bootstrap_cfg"
    )
    bootstrap_cfg_scale: float = option(4.0, "CFG scale used with --bootstrap-cfg")
    reference_batch_split: bool = option(
        False,
        "reuse the reference's overlapping bootstrap / flow split of the batch (off: disjoint "
        "rows)",
    )
    rotate_levels: bool = option(
        True,
        "with fewer bootstrap rows than step levels, rotate their levels with the step so every "
        "level is trained (off: all at level 0, as the reference)",
    )
    intrinsic_guidance: bool = option(
        False,
        "the network takes the CFG scale as an input, trained on guided targets; sampling "
        "--cfg is then one call per step (labelled data)",
    )
    guidance_min: float = option(1.0, "intrinsic guidance: smallest training scale")
    guidance_max: float = option(4.0, "intrinsic guidance: largest training scale")
    _warned: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bootstrap_every < 1:
            raise UsageError(f"bootstrap_every must be >= 1, got {self.bootstrap_every}")
        if self.level_sampling not in LEVEL_SAMPLINGS:
            raise UsageError(
                f"level_sampling must be one of {', '.join(LEVEL_SAMPLINGS)}, "
                f"got {self.level_sampling!r}"
            )
        if self.intrinsic_guidance and self.bootstrap_cfg:
            raise UsageError(
                "intrinsic_guidance replaces bootstrap_cfg (the scale is a network input): "
                "choose one"
            )
        if not 1.0 <= self.guidance_min <= self.guidance_max:
            raise UsageError(
                f"guidance scales need 1 <= guidance_min <= guidance_max, "
                f"got {self.guidance_min} and {self.guidance_max}"
            )

    @property
    def guided(self) -> bool:
        """Whether the network takes a guidance scale (intrinsic guidance on labelled data)."""
        return self.intrinsic_guidance and self.num_classes > 0

    def network_inputs(self) -> dict[str, bool]:
        return {"guidance_input": True} if self.guided else {}

    def targets(
        self,
        model: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
    ) -> TrainingBatch:
        n = x1.shape[0]
        nb = n // self.bootstrap_every
        if nb == 0:
            raise UsageError(
                f"batch size {n} leaves no bootstrap rows "
                f"with bootstrap_every={self.bootstrap_every}"
            )
        flow_rows = slice(0, n - nb) if self.reference_batch_split else slice(nb, n)
        bootstrap_net = target_net if self.bootstrap_ema else model
        w_boot = self.guidance_scales(nb, generator, x1.device) if self.guided else None
        boot = self.bootstrap_part(
            bootstrap_net, x1[:nb], rows_of(y, slice(0, nb)), generator, w_boot
        )
        flow = self.flow_part(x1[flow_rows], rows_of(y, flow_rows), generator, flow_rows)
        if self.guided:
            flow = self.guided_targets(bootstrap_net, flow, generator)
        return TrainingBatch(
            x_t=torch.cat([boot.x_t, flow.x_t]),
            t=torch.cat([boot.t, flow.t]),
            d=torch.cat([boot.d, flow.d]),
            y=None if y is None else torch.cat([boot.y, flow.y]),
            target=torch.cat([boot.target, flow.target]),
            groups={"bootstrap": slice(0, nb), "flow": slice(nb, n)},
            w=None if w_boot is None else torch.cat([w_boot, flow.w]),
        )

    def guidance_scales(
        self, n: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """w ~ U[guidance_min, guidance_max] per row."""
        u = torch.rand(n, generator=generator, device=device)
        return self.guidance_min + (self.guidance_max - self.guidance_min) * u

    @torch.no_grad()
    def guided_targets(
        self, bootstrap_net: nn.Module, flow: TrainingBatch, generator: torch.Generator
    ) -> TrainingBatch:
        """Intrinsic guidance on the flow rows: a row with a kept label and scale w regresses
        onto the guided velocity w v + (1 - w) u_null, u_null the bootstrap network's unconditional
        output there (w = 1 for rows whose label was dropped: plain flow matching). Bootstrap
        rows pass w to both half steps, so guidance enters once, at the finest level, and is
        carried, not re-applied, up the levels (no compounding)."""
        assert flow.y is not None
        kept = flow.y != self.null_class
        w = torch.where(kept, self.guidance_scales(kept.shape[0], generator, kept.device), 1.0)
        null = torch.full_like(flow.y, self.null_class)
        u_null = bootstrap_net(flow.x_t, flow.t, flow.d, null, w=torch.ones_like(w)).to(
            flow.target.dtype
        )
        wb = broadcast(w, flow.target)
        flow.target = wb * flow.target + (1 - wb) * u_null
        flow.w = w
        return flow

    @torch.no_grad()
    def bootstrap_part(
        self,
        bootstrap_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
        w: torch.Tensor | None = None,
    ) -> TrainingBatch:
        """Self-consistency targets; `w` (intrinsic guidance) is given to both half steps."""
        nb = x1.shape[0]
        if self.level_sampling == "coarse":
            levels = coarse_levels(nb, self.num_levels, generator, x1.device)
        else:
            rotate_from = self.step if self.rotate_levels else None
            levels = bootstrap_levels(nb, self.denoise_timesteps, rotate_from).to(x1.device)
            if nb < self.num_levels and not self.rotate_levels and not self._warned:
                self._warned = True
                log.warning(
                    f"warning: {nb} bootstrap rows per batch are fewer than the "
                    f"{self.num_levels} step levels, so every one is at level 0 as in the "
                    f"reference and levels 1 to {self.num_levels - 1} are never trained; "
                    "--rotate-levels (the default) trains them all"
                )
        sections = torch.pow(2.0, levels.float())
        t = grid_times(nb, sections, generator, x1.device)
        d = 1.0 / sections
        x_t = interpolate(self.noise(x1, generator, slice(0, nb)), x1, t)
        target = self.bootstrap_target(bootstrap_net, x_t, t, d, y, w)
        return TrainingBatch(x_t=x_t, t=t, d=d, y=y, target=target, w=w)

    @torch.no_grad()
    def bootstrap_target(
        self,
        bootstrap_net: nn.Module,
        x_t: torch.Tensor,
        t: torch.Tensor,
        d: torch.Tensor,
        y: torch.Tensor | None,
        w: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The self-consistency target of rows at (x_t, t) with step d: two half steps of the
        bootstrap network, clipped, averaged (CFG in the first nb // log2(M) rows with
        bootstrap_cfg)."""
        half = d / 2
        use_cfg = self.bootstrap_cfg and y is not None and self.num_classes > 0
        num_guided = x_t.shape[0] // self.num_levels if use_cfg else 0

        def velocity(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
            if w is not None:
                return bootstrap_net(x, at, half, y, w=w).to(x.dtype)
            return guided_velocity(
                bootstrap_net, x, at, half, y, self.bootstrap_cfg_scale, self.null_class, num_guided
            ).to(x.dtype)

        v1 = velocity(x_t, t)
        x_mid = torch.clamp(x_t + broadcast(half, x_t) * v1, -CLIP, CLIP)
        v2 = velocity(x_mid, t + half)
        return torch.clamp((v1 + v2) / 2, -CLIP, CLIP)

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(power_of_two=True, max_steps=self.denoise_timesteps, fixed_d=None)


@dataclass
class ImprovedShortcut(Shortcut):
    """Shortcut with the iSM options on (Nguyen et al., 2025, arXiv 2510.21250): intrinsic
    guidance (labelled data), the multi-level wavelet loss (images; levels chosen from the image
    size, at most 3), optimal-transport pairing over the whole batch, and a twin EMA whose fast
    copy (decay 0.5; see benchmarks/results/ism_ablation_checkerboard.md) computes the bootstrap
    targets while the run's EMA is evaluated.
    """

    name = "ism"

    intrinsic_guidance: bool = option(True)
    ot_pairing: bool = option(True)
    wavelet_levels: int = option(-1)  # as many as the images allow, up to 3; vectors: MSE
    target_ema_decay: float = option(0.5)
