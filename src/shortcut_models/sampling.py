"""The n-step Euler sampler. It knows nothing about objectives beyond their SamplingRule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from shortcut_models.errors import UsageError
from shortcut_models.guidance import guided_velocity

# the step budgets a shortcut model with M = 128 allows, and the ones every table reports
STEP_BUDGETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class SamplingRule:
    """What a trained model allows at sampling time.

    power_of_two: step counts must be 1, 2, 4, ... (shortcut models know only those step sizes).
    max_steps: the largest allowed step count (None: unlimited).
    fixed_d: tell the network this step size whatever n is (a flow-matching model was only ever
        trained at d = 1/M); None tells it the real step 1/n.
    below_max_d: tell the network this step size when n < max_steps, and the real 1/n at
        n = max_steps (live reflow trains only d = 1 and d = 1/M, and the reference samples it
        so: level 0 below M steps, level log2(M) at M).
    renoise: multistep consistency sampling: each step predicts the data point
        x1_hat = x + (1 - t) v and moves to t + 1/n on the path from fresh noise to x1_hat.
    """

    power_of_two: bool = False
    max_steps: int | None = None
    fixed_d: float | None = None
    below_max_d: float | None = None
    renoise: bool = False

    def step_size(self, steps: int) -> float:
        """The step size d the network is told when sampling in `steps` steps."""
        if self.fixed_d is not None:
            return self.fixed_d
        if self.below_max_d is not None and (self.max_steps is None or steps < self.max_steps):
            return self.below_max_d
        return 1.0 / steps

    def problem(self, steps: int) -> str | None:
        """Why this model cannot be sampled in `steps` steps (None: it can)."""
        if not isinstance(steps, int) or steps < 1:
            return f"number of steps must be a positive integer, got {steps!r}"
        if self.power_of_two and steps & (steps - 1):
            return f"this model samples in a power-of-two number of steps, got {steps}"
        if self.max_steps is not None and steps > self.max_steps:
            return f"this model samples in at most {self.max_steps} steps, got {steps}"
        return None

    def allows(self, steps: int) -> bool:
        return self.problem(steps) is None


def check_steps(steps: int, spec: SamplingRule) -> None:
    """Raise a UsageError if this model cannot be sampled in `steps` steps."""
    problem = spec.problem(steps)
    if problem is not None:
        raise UsageError(problem)


@torch.no_grad()
def sample(
    model: Callable[..., torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    spec: SamplingRule = SamplingRule(),
    y: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    null_class: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = s(x, t, d, y) from t = 0 (noise) to t = 1 (data) in `steps` Euler steps.

    Each step is one network call (with CFG, one call on a doubled batch), so steps = 1 is a
    single forward pass. `generator` (CPU) draws the fresh noise of renoising samplers.
    """
    check_steps(steps, spec)
    x = noise
    n = x.shape[0]
    dt = 1.0 / steps
    wide = torch.promote_types(x.dtype, torch.float32)  # t and d: float32, float64 for float64 x
    d = torch.full((n,), spec.step_size(steps), device=x.device, dtype=wide)
    for i in range(steps):
        t = torch.full((n,), i * dt, device=x.device, dtype=wide)
        v = guided_velocity(model, x, t, d, y, cfg_scale, null_class).to(x.dtype)
        if spec.renoise and i < steps - 1:
            x1_hat = x + (1 - i * dt) * v
            eps = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            x = x1_hat * ((i + 1) * dt) + eps * (1 - (i + 1) * dt)
        else:
            x = x + dt * v
    return x


def seeded_noise(
    shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from `seed`, so every device gets the same samples."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device)
