"""Improved MeanFlow (iMF; Geng et al., 2025, arXiv 2512.02012): MeanFlow whose regression
target no longer contains the network, with the guidance scale and interval as inputs.

In our time direction (noise at t = 0; u and v are minus the paper's), its changes over
`meanflow`, from the paper and its official JAX code:

- **The v-loss.** The network has two heads on one trunk: u(x_t, t, d), the average velocity
  over the step d, and an auxiliary v, the instantaneous velocity. The JVP of u runs along the
  network's own conditional velocity v_c (not the sampled x1 - x0) with the end t + d fixed,
  tangents (v_c, 1, -1); the compound V = u - d sg(du/dt) is regressed onto the guided velocity
  v_g, and so is the v head. Rows with d = 0 (half the batch) are flow matching: V = u.
- **Guidance as a condition.** Each row draws a scale w log-uniform on [1, guidance_max] and a
  time interval [lo, hi] (lo ~ U(0, 1/2), hi ~ U(1/2, 1); [0, 1] on the d = 0 rows) in which it
  applies, and the network is told both. With w' = w inside the interval and 1 outside,
  v_g = v + (1 - 1/w') (v_c - v_u): v_c is the v head at scale w' and v_u at the null label and
  scale 1, both at d = 0 over [0, 1] without gradient. A label dropped for CFG gets v_g = v.
  Sampling is one call per step at the scale the sampler is given.
- **Both losses** are adaptively weighted per row (p = 1, c = 0.01), then summed.

Where ours differs from the official code: the v head is a second output layer on the shared
trunk (the official forks its last blocks), conditions enter by adaLN as in our other backbones
(the paper uses in-context tokens), and the no-gradient pass is smaller: v_c is computed once, at
w', on the d != 0 rows only (the official computes it at w and at w' on every row); on the d = 0
rows, where w' = w, the training forward has the same inputs, so its v head, detached, is v_c.
That pass holds 1.5 B rows on labelled data (the official code's: 3 B) and B/2 unlabelled, where
there is no guidance: v_c is the v head's own output and v_g = v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models.distributed import unwrap
from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import (
    Objective,
    broadcast,
    flow_velocity,
    interpolate,
    rows_of,
)
from shortcut_models.objectives.meanflow import JVPTangents, time_derivative
from shortcut_models.objectives.mixins import AdaptiveWeight, LogitNormalTimes
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

Conditions = dict[str, torch.Tensor]


def heads(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[u | v] along dimension 1 (a `both_heads` call) -> (u, v)."""
    half = out.shape[1] // 2
    return out[:, :half], out[:, half:]


def rows(conditions: Conditions, which: slice) -> Conditions:
    return {name: value[which] for name, value in conditions.items()}


@dataclass
class ImprovedMeanFlow(JVPTangents, LogitNormalTimes, AdaptiveWeight, Objective):
    """The v-loss through u's JVP along the predicted velocity, an auxiliary v head, and the
    guidance scale and interval drawn per row and given to the network (labelled data)."""

    name = "imf"
    time_scale = 1.0  # t is differentiated: unscaled sinusoids, as `meanflow`

    flow_fraction: float = option(
        0.5, "share of rows with d = 0 (flow matching; the official data_proportion)"
    )
    norm_p: float = option(1.0)  # the official code's adaptive weighting (and logit-normal
    norm_c: float = option(0.01)  # times at mu -0.4, sigma 1)
    guidance_max: float = option(8.0)  # the scale is log-uniform on [1, this] (official s_max + 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.flow_fraction <= 1.0:
            raise UsageError(f"flow_fraction must be in [0, 1], got {self.flow_fraction}")
        if self.guidance_max < 1:
            raise UsageError(f"guidance_max must be at least 1, got {self.guidance_max}")

    @property
    def guided(self) -> bool:
        """Whether the network takes a guidance scale and interval (labelled data)."""
        return self.num_classes > 0

    def network_inputs(self) -> dict[str, bool]:
        guidance = {"guidance_input": True, "guidance_interval": True} if self.guided else {}
        return {"velocity_head": True, **guidance}

    def conditions(
        self, n: int, num_mean: int, generator: torch.Generator, device: torch.device
    ) -> Conditions:
        """Per row: a scale w, log-uniform on [1, guidance_max], and the interval [lo, hi] where
        it applies ([0, 1] on the d = 0 rows, the last n - num_mean); none without labels."""
        if not self.guided:
            return {}
        u = torch.rand(3, n, generator=generator, device=device)
        w = torch.exp(u[0] * math.log(self.guidance_max))
        lo, hi = 0.5 * u[1], 0.5 + 0.5 * u[2]
        flow = torch.arange(n, device=device) >= num_mean
        interval = torch.stack([lo.masked_fill(flow, 0.0), hi.masked_fill(flow, 1.0)], dim=1)
        return {"w": w, "interval": interval}

    def scale_inside(self, t: torch.Tensor, conditions: Conditions) -> torch.Tensor | None:
        """w' per row: the drawn scale inside the row's interval, 1 outside; None unguided."""
        if not conditions:
            return None
        w, interval = conditions["w"], conditions["interval"]
        inside = (interval[:, 0] <= t) & (t <= interval[:, 1])
        return torch.where(inside, w, torch.ones_like(w))

    @torch.no_grad()
    def reference_velocities(
        self,
        model: nn.Module,
        x_t: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        w_in: torch.Tensor | None,
        num_mean: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(v_c, v_u) without gradient, at d = 0 over [0, 1] (no interval given: the network's
        default), in one call: v_c, the v head at w' on the first `num_mean` rows (the JVP's
        tangent; the d = 0 rows take theirs from the training forward, whose inputs are the
        same), and v_u at the null label and scale 1 on every row (None unguided)."""
        mean = slice(0, num_mean)
        if w_in is None or y is None:
            if not num_mean:
                return x_t[mean], None  # empty: no row takes a tangent
            zero = torch.zeros_like(t[mean])
            out = model(x_t[mean], t[mean], zero, rows_of(y, mean), both_heads=True)
            return heads(out)[1], None
        rows_in = num_mean + t.shape[0]
        out = model(
            torch.cat([x_t[mean], x_t]),
            torch.cat([t[mean], t]),
            torch.zeros(rows_in, device=t.device, dtype=t.dtype),
            torch.cat([y[mean], torch.full_like(y, self.null_class)]),
            w=torch.cat([w_in[mean], torch.ones_like(w_in)]),
            both_heads=True,
        )
        v = heads(out)[1]
        return v[:num_mean], v[num_mean:]

    def loss(
        self,
        net: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
        paired: torch.Tensor | None = None,  # no pairing: noise is drawn on the device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reference velocities from the trained network itself (no gradient), then one pass
        of `net` per row: the JVP's primal output on the rows with d != 0, a plain forward on the
        rest, whose v head, detached, is those rows' v_c."""
        n = x1.shape[0]
        num_mean = n - round(n * self.flow_fraction)
        t, d = self.logit_normal_steps(n, num_mean, generator, x1.device)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_t, v = interpolate(x0, x1, t), flow_velocity(x0, x1)
        conditions = self.conditions(n, num_mean, generator, x1.device)
        w_in = self.scale_inside(t, conditions)
        v_c_mean, v_u = self.reference_velocities(unwrap(net), x_t, t, y, w_in, num_mean)
        y_in = self.drop_labels(y, generator)
        mean, flow = slice(0, num_mean), slice(num_mean, n)
        compound, velocity, v_c = [], [], [v_c_mean.to(v.dtype)]
        if num_mean:
            out, tangent = time_derivative(
                net,
                x_t[mean],
                t[mean],
                d[mean],
                rows_of(y_in, mean),
                v_c_mean,
                self.tangents == "hand",
                both_heads=True,
                **rows(conditions, mean),
            )
            u, v_head = heads(out)
            dudt = heads(tangent)[0].detach().to(v.dtype)
            compound.append(u.float() - broadcast(d[mean], dudt) * dudt)
            velocity.append(v_head)
        if num_mean < n:
            out = net(
                x_t[flow], t[flow], d[flow], rows_of(y_in, flow), both_heads=True,
                **rows(conditions, flow),
            )  # fmt: skip
            u, v_head = heads(out)
            compound.append(u.float())
            velocity.append(v_head)
            v_c.append(v_head.detach().to(v.dtype))
        v_g = v
        if v_u is not None and w_in is not None and y_in is not None:
            guided = v + broadcast(1 - 1 / w_in, v) * (torch.cat(v_c) - v_u.to(v.dtype))
            v_g = torch.where(broadcast(y_in == self.null_class, v).bool(), v, guided)
        err_u = (torch.cat(compound) - v_g.float()).pow(2).flatten(1).mean(1)
        err_v = (torch.cat(velocity).float() - v_g.float()).pow(2).flatten(1).mean(1)
        dims = x1[0].numel()
        loss = self.weighted(err_u, dims) + self.weighted(err_v, dims)
        info = {"mse_u": err_u.mean().detach(), "mse_v": err_v.mean().detach()}
        for name, which in (("mean", mean), ("flow", flow)):
            if which.stop > which.start:
                info[f"mse_u_{name}"] = err_u[which].mean().detach()
        return loss.mean(), info

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(power_of_two=False, max_steps=None, fixed_d=None)
