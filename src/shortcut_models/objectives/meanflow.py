"""MeanFlow (Geng et al., 2025, arXiv 2505.13447): learn the average velocity over a step.

Our time runs from noise (t = 0) to data (t = 1) and the network, told the step d, outputs the
average velocity u(x_t, t, d) = (1/d) int_t^{t+d} v ds (MeanFlow's tau = 1 - t, its u is minus
ours). Differentiating d u = int_t^{t+d} v ds in t with the end t + d fixed gives

    u = v + d (v . d_x u + d_t u - d_d u),

so the target is v + d * jvp(u, (x, t, d), tangents (v, 1, -1)) under stop-gradient; rows with
d = 0 reduce to flow matching. The JVP runs only on the rows with d != 0 and its primal output
is their prediction (`one_pass`, as the paper's code); its tangent comes from hand-written rules
applied to the backbone's plain forward (`backbones.forward_mode`). Unlike the paper, the share
of rows with d != 0 is exact per batch (the first rows) rather than drawn per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shortcut_models.backbones.attention import jvp_attention
from shortcut_models.backbones.forward_mode import forward_with_tangent
from shortcut_models.distributed import unwrap
from shortcut_models.errors import UsageError
from shortcut_models.guidance import conditional_pair
from shortcut_models.objectives.base import (
    Objective,
    TrainingBatch,
    broadcast,
    flow_velocity,
    interpolate,
    rows_of,
)
from shortcut_models.objectives.mixins import AdaptiveWeight, LogitNormalTimes, TwinTargetEMA
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule


def time_derivative(
    net: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    y: torch.Tensor | None,
    v: torch.Tensor,
    by_hand: bool = True,
    **conditions: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, du/dt) along the path with the end t + d fixed: one JVP with tangents (v, 1, -1);
    `conditions` are further keywords of the network call, held fixed (`w`, `interval`,
    `both_heads`).

    `by_hand`: the backbone's plain forward with hand-written tangent rules applied from outside
    (`backbones.forward_mode`: about one forward more than the forward, nothing kept for the
    backward), called through `net` itself, so DDP's and torch.compile's wrappers see the call
    and u carries gradients. Otherwise `torch.func.jvp` on the plain module, with attention on
    the fused kernel and a hand-written tangent (`backbones.attention`: the fused kernels have no
    forward-mode rule).
    """
    ones = torch.ones_like(t)
    module = unwrap(net)
    if by_hand:
        dx = v.to(x.dtype)
        return forward_with_tangent(
            net, x, t, d, y, dx=dx, dt=ones, dd=-ones, module=module, **conditions
        )
    with jvp_attention():
        return torch.func.jvp(
            lambda x_, t_, d_: module(x_, t_, d_, y, **conditions),
            (x, t, d),
            (v.to(x.dtype), ones, -ones),
        )


@dataclass
class JVPTangents:
    """The option of objectives that take a JVP of the network (a mixin listed before the
    objective's base class): MeanFlow, imf."""

    tangents: str = option(
        "hand",
        "the JVP by hand-written tangent rules applied to the backbone's forward, torch.func.jvp "
        "for a function without one (hand), or by torch.func.jvp throughout (autodiff; the same "
        "numbers to rounding, slower)",
        choices=("hand", "autodiff"),
    )


@dataclass
class MeanFlow(TwinTargetEMA, JVPTangents, LogitNormalTimes, AdaptiveWeight, Objective):
    """Average-velocity targets from the MeanFlow identity, adaptive loss weighting, logit-normal
    times, CFG folded into the target (so 1-step sampling needs no guidance: sample with cfg 1).
    """

    name = "meanflow"
    # The target differentiates the network in t, so t enters the sinusoids unscaled (as in the
    # paper's code): with DiT's t x 1000, d_t u is dominated by fast features and the target is
    # noise (benchmarks/results/code_notes.md).
    time_scale = 1.0

    mean_fraction: float = option(0.25, "share of rows with r != t (the paper's best, Table 1a)")
    norm_p: float = option(1.0)  # the paper's adaptive weighting (time_mu -0.4, time_sigma 1)
    cfg_omega: float = option(1.0, "CFG scale folded into the target velocity (1: none)")
    cfg_kappa: float = option(0.0, "the paper's CFG mixing scale kappa")
    jvp_ema: bool = option(
        False, "take the JVP through the EMA weights (off: the live ones, as the paper)"
    )
    one_pass: bool = option(
        True,
        "take the training prediction from the JVP's own forward pass (the tangent without "
        "gradient) instead of a second forward",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mean_fraction <= 1.0:
            raise UsageError(f"mean_fraction must be in [0, 1], got {self.mean_fraction}")

    def times(self, n: int, generator: torch.Generator, device: torch.device):
        """(t, d): the first round(n * mean_fraction) rows get an interval, the rest d = 0."""
        num_mean = round(n * self.mean_fraction)
        return self.logit_normal_steps(n, num_mean, generator, device)

    def loss(
        self,
        net: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
        paired: torch.Tensor | None = None,  # no pairing: noise is drawn on the device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """With `one_pass` (and the JVP through the trained weights): each row through `net`
        once, the JVP's primal output being the prediction on the rows with d != 0; otherwise
        the targets without gradient, then a training forward on every row. `torch.func.jvp`
        runs on the plain module, so behind a DDP / compile wrapper only the hand-written rules
        take the one pass."""
        by_hand = self.tangents == "hand"
        if not (self.one_pass and not self.jvp_ema and (by_hand or unwrap(net) is net)):
            return super().loss(net, target_net, x1, y, generator)
        batch, prediction = self.batch(net, target_net, x1, y, generator, predict=True)
        return self.regression_loss(prediction, batch)

    def targets(
        self,
        model: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
    ) -> TrainingBatch:
        return self.batch(model, target_net, x1, y, generator, predict=False)[0]

    def batch(
        self,
        model: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
        predict: bool,
    ) -> tuple[TrainingBatch, torch.Tensor | None]:
        """The targets, and with `predict` the prediction of `model` on every row (with
        gradient: the JVP's primal output on the rows with d != 0, a plain forward on the rest)."""
        n = x1.shape[0]
        t, d = self.times(n, generator, x1.device)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_t, v = interpolate(x0, x1, t), flow_velocity(x0, x1)
        y_in = self.drop_labels(y, generator)
        net = target_net if self.jvp_ema else model
        with torch.no_grad():
            v = self.cfg_target_velocity(unwrap(net), x_t, t, v, y_in)
        # the JVP only where d != 0 (the first rows): elsewhere d * du/dt is zero and the
        # target is v
        num_mean = round(n * self.mean_fraction)
        mean, flow = slice(0, num_mean), slice(num_mean, n)
        targets, predictions = [], []
        with torch.set_grad_enabled(predict):
            if num_mean:
                by_hand = self.tangents == "hand"
                xm, tm, dm, ym, vm = x_t[mean], t[mean], d[mean], rows_of(y_in, mean), v[mean]
                jvp_net = net if predict else unwrap(net)
                u, dudt = time_derivative(jvp_net, xm, tm, dm, ym, vm, by_hand)
                targets.append(vm + broadcast(dm, vm) * dudt.detach().to(v.dtype))
                predictions.append(u)
            if predict and num_mean < n:
                predictions.append(net(x_t[flow], t[flow], d[flow], rows_of(y_in, flow)))
        targets.append(v[flow])
        groups = {"mean": mean, "flow": flow}
        batch = TrainingBatch(x_t=x_t, t=t, d=d, y=y_in, target=torch.cat(targets), groups=groups)
        return batch, torch.cat(predictions) if predict else None

    def cfg_target_velocity(
        self,
        net: nn.Module,
        x_t: torch.Tensor,
        t: torch.Tensor,
        v: torch.Tensor,
        y: torch.Tensor | None,
    ) -> torch.Tensor:
        """omega v + kappa u(x_t, t, 0 | y) + (1 - omega - kappa) u(x_t, t, 0 | null) on rows
        whose label was kept; v itself on rows trained unconditionally (the paper's eq. 13)."""
        if y is None or self.num_classes == 0 or (self.cfg_omega == 1.0 and self.cfg_kappa == 0):
            return v
        cond, uncond = conditional_pair(net, x_t, t, torch.zeros_like(t), y, self.null_class)
        cond, uncond = cond.to(v.dtype), uncond.to(v.dtype)
        omega, kappa = self.cfg_omega, self.cfg_kappa
        guided = omega * v + kappa * cond + (1 - omega - kappa) * uncond
        return torch.where(broadcast(y == self.null_class, v).bool(), v, guided)

    def regression_loss(
        self, pred: torch.Tensor, batch: TrainingBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sg(w) * ||err||^2 with w = 1 / (||err||^2 + c)^p (||.||^2 summed over a sample's
        dimensions, as the paper); also the plain MSE, overall and per group of rows, for comparison
        with other objectives."""
        err = self.per_sample_loss(pred, batch)
        info = {"mse": err.mean().detach()}
        info.update(
            {
                f"mse_{name}": err[rows].mean().detach()
                for name, rows in batch.groups.items()
                if rows.stop > rows.start
            }
        )
        return self.weighted(err, pred[0].numel()).mean(), info

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(power_of_two=False, max_steps=None, fixed_d=None)
