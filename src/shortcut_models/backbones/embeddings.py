"""Conditioning embeddings shared by every backbone: time t, step size d and class y."""

from __future__ import annotations

import math

import torch
from torch import nn


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """float32, or float64 where the input already is (derivative checks run in float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) scalars -> (N, dim) [cos | sin] features with geometrically spaced frequencies."""
    half = dim // 2
    x = at_least_fp32(x)
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=x.device, dtype=x.dtype) / half
    )
    args = x[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


MIN_STEP = 2.0**-16


def step_level(d: torch.Tensor) -> torch.Tensor:
    """Step size d = 2^-k -> level k = log2(1/d), the integer the reference feeds its dt embedder.

    Passing d itself would squeeze every step size below 1/16 into nearly the same embedding;
    the level spreads them evenly (d = 1 -> 0, d = 1/128 -> 7). Steps below 2^-16, and d = 0 (an
    instantaneous velocity, MeanFlow's r = t), share level 16 (clamped before the log, so the
    derivative in d is finite, and zero there).
    """
    return -torch.log2(at_least_fp32(d).clamp(min=MIN_STEP))


class TimestepEmbedder(nn.Module):
    """Scalar -> sinusoidal features -> 2-layer MLP, as in DiT.

    `scale` multiplies the scalar before the sinusoids. For t in [0, 1] we use 1000 (as DiT's
    1000-step schedules effectively do); the reference feeds t unscaled, which leaves most
    frequencies nearly constant over [0, 1]. For the step level (0..7) no scaling is needed.
    """

    def __init__(self, hidden_size: int, frequency_size: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.scale = scale
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_embedding(value * self.scale, self.frequency_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; row `num_classes` is the null class used for CFG dropout."""

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)


class Conditioning(nn.Module):
    """c = embed(t) + embed(level(d)) + embed(y): the conditioning vector of the reference.

    With `guidance_input` (iSM's intrinsic guidance) it adds embed(w - 1) of a guidance scale w
    per row, so that one call of the network gives the guided velocity at any scale; w = 1 (no
    guidance) when not given. With `guidance_interval` (improved MeanFlow) it adds embed(lo) +
    embed(hi) of the times [lo, hi] in which that guidance applies; [0, 1] (everywhere) when not
    given.
    """

    def __init__(
        self,
        hidden_size: int,
        num_classes: int = 0,
        frequency_size: int = 256,
        time_scale: float = 1000.0,
        guidance_input: bool = False,
        guidance_interval: bool = False,
    ) -> None:
        super().__init__()
        if guidance_interval and not guidance_input:
            raise ValueError("a guidance interval input needs the guidance input (guidance_input)")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive finite number, got {time_scale}")
        if hidden_size < 1:
            raise ValueError(f"hidden size must be positive, got {hidden_size}")
        self.num_classes = num_classes
        self.t_embedder = TimestepEmbedder(hidden_size, frequency_size, scale=time_scale)
        self.d_embedder = TimestepEmbedder(hidden_size, frequency_size, scale=1.0)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size) if num_classes > 0 else None
        # scales of a few units: x100 spreads them over the sinusoids as t x 1000 does for t
        self.w_embedder = (
            TimestepEmbedder(hidden_size, frequency_size, scale=100.0) if guidance_input else None
        )
        # the interval's ends are times: embedded as t is
        self.interval_embedders = (
            nn.ModuleList(
                TimestepEmbedder(hidden_size, frequency_size, scale=time_scale) for _ in range(2)
            )
            if guidance_interval
            else None
        )

    def reset_parameters(self) -> None:
        """DiT's initialisation: normal(0.02) for every embedder."""
        self.t_embedder.reset_parameters()
        self.d_embedder.reset_parameters()
        if self.y_embedder is not None:
            self.y_embedder.reset_parameters()
        if self.w_embedder is not None:
            self.w_embedder.reset_parameters()
        for embedder in self.interval_embedders or ():
            embedder.reset_parameters()

    def forward(
        self,
        t: torch.Tensor,
        d: torch.Tensor,
        y: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        interval: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """interval: (N, 2) times [lo, hi] in which guidance w applies (guidance-interval
        networks)."""
        c = self.t_embedder(t) + self.d_embedder(step_level(d))
        if self.y_embedder is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)
            c = c + self.y_embedder(y)
        if self.w_embedder is not None:
            c = c + self.w_embedder(torch.zeros_like(t) if w is None else w - 1)
        elif w is not None:
            raise ValueError("this network has no guidance input (build it with guidance_input)")
        if self.interval_embedders is not None:
            lo = torch.zeros_like(t) if interval is None else interval[:, 0]
            hi = torch.ones_like(t) if interval is None else interval[:, 1]
            c = c + self.interval_embedders[0](lo) + self.interval_embedders[1](hi)
        elif interval is not None:
            raise ValueError("this network has no guidance interval input (guidance_interval)")
        return c


DATA_PREDICTION_MIN_GAP = 0.05  # JiT clips 1 - t at 0.05 when it turns x^ into a velocity
PREDICTIONS = ("velocity", "data")


class ConditionedBackbone(nn.Module):
    """s(x, t, d, y, w): the conditioning vector c = self.cond(t, d, y, w) (a `Conditioning`),
    then `body(x, c)`, the network proper, which each backbone writes as plain tensor code.

    A backbone built with `velocity_head` (improved MeanFlow's auxiliary v head) has twice the
    output channels: the first half is the velocity a call returns (the average velocity u),
    the second the instantaneous velocity v, returned with it by `both_heads=True`.
    """

    cond: Conditioning
    convolutional = False  # True: --memory-format channels-last / auto applies to it
    velocity_head = False
    predicts_data = False  # True: the body predicts the clean sample (see `forward`)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        d: torch.Tensor,
        y: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        interval: torch.Tensor | None = None,
        both_heads: bool = False,
    ) -> torch.Tensor:
        """x: (N, ...) samples at time t; t, d: (N,) time and step size; y: (N,) labels or None;
        w: (N,) guidance scales (networks with a guidance input), interval: (N, 2) where the
        guidance applies (networks with an interval input) -> the velocity, shaped as x (with
        `both_heads`, [u | v] along dimension 1).

        A network that `predicts_data` has a body that outputs the clean sample x^ rather than
        the velocity; the call returns the velocity that reaches x^ at t = 1, (x^ - x) / (1 - t)
        with 1 - t at least DATA_PREDICTION_MIN_GAP (JiT, Li & He 2025: a small network need not
        carry the noise through to cancel it, which in pixel space it does poorly)."""
        out = self.body(x, self.cond(t, d, y, w, interval))
        if self.predicts_data:
            # torch functions, not tensor methods: MeanFlow's JVP calls this on Duals
            gap = torch.clamp(1 - t, min=DATA_PREDICTION_MIN_GAP)
            gap = torch.reshape(gap, (-1, *[1] * (x.dim() - 1)))
            out = (out - (torch.cat([x, x], 1) if self.velocity_head else x)) / gap
        if not self.velocity_head or both_heads:
            return out
        return out[:, : out.shape[1] // 2]

    def body(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
