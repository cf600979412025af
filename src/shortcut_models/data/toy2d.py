"""2-D toy distributions, sampled on the fly, scaled to roughly [-2, 2]^2."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from shortcut_models.data.source import Source
from shortcut_models.seeding import DATA, step_generator

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 dark squares of a 4x4 board over [-2, 2]^2."""
    x = torch.rand(n, generator=generator) * 4 - 2
    row = torch.randint(0, 2, (n,), generator=generator) * 2.0
    y = torch.rand(n, generator=generator) - row + (torch.floor(x) % 2)
    return torch.stack([x, y], dim=1)


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """Eight gaussians (std 0.1) evenly spaced on a circle of radius 2."""
    k = torch.randint(0, 8, (n,), generator=generator).float()
    angle = k * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centers + 0.1 * torch.randn(n, 2, generator=generator)


def two_moons(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles with noise 0.05, centred and scaled by 1.5."""
    upper = torch.rand(n, generator=generator) < 0.5
    theta = torch.rand(n, generator=generator) * math.pi
    a = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    b = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    points = torch.where(upper[:, None], a, b) + 0.05 * torch.randn(n, 2, generator=generator)
    return (points - torch.tensor([0.5, 0.25])) * 1.5


def spiral(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved spiral arms over 1.5 turns with noise 0.05."""
    r = torch.sqrt(torch.rand(n, generator=generator))
    angle = r * 3 * math.pi
    arm = torch.stack([-torch.cos(angle) * r, torch.sin(angle) * r], dim=1) * 2
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
    return arm * sign[:, None] + 0.05 * torch.randn(n, 2, generator=generator)


TOY_DATASETS: dict[str, Sampler] = {
    "checkerboard": checkerboard,
    "8gaussians": eight_gaussians,
    "moons": two_moons,
    "spiral": spiral,
}


class ToyData(Source):
    """A 2-D distribution as a training data source: batch k is a pure function of (seed, k)."""

    shape = (2,)
    num_classes = 0
    kind = "vector"

    def __init__(self, name: str) -> None:
        self.name = name
        self.sampler = TOY_DATASETS[name]

    def batch(
        self, step: int, batch_size: int, seed: int, rows: slice | None = None
    ) -> tuple[torch.Tensor, None]:
        x = self.sampler(batch_size, step_generator(seed, step, DATA))
        return (x if rows is None else x[rows]), None

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n fresh points from their own seed (for reference sets in evaluation)."""
        return self.sampler(n, torch.Generator().manual_seed(seed))
