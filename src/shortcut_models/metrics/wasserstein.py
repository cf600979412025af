"""Distances between point clouds: sliced Wasserstein-2 and exact Wasserstein-2 (POT)."""

from __future__ import annotations

import numpy as np
import torch

from shortcut_models.errors import UsageError


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, num_projections: int = 512, seed: int = 0
) -> float:
    """sqrt of the mean over random directions of the 1-D W2^2 between the projected clouds.

    Both clouds must have the same number of points: 1-D W2 is then the distance between the
    sorted projections. Directions come from `seed`, so the value is deterministic.
    """
    a, b = _check_clouds(a, b)
    if not _finite(a, b):
        return float("inf")
    if a.shape[0] != b.shape[0]:
        raise UsageError(f"sliced W2 needs equal sizes, got {a.shape[0]} and {b.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(a.shape[1], num_projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    pa = torch.sort(a @ directions, dim=0).values
    pb = torch.sort(b @ directions, dim=0).values
    return float((pa - pb).pow(2).mean().sqrt())


def wasserstein2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2 between uniform empirical measures (POT's network simplex, `ot.emd2`)."""
    import ot  # POT: imported here, it is slow to import and only this function needs it

    a, b = _check_clouds(a, b)
    if not _finite(a, b):
        return float("inf")
    cost = ot.dist(a.numpy(), b.numpy(), metric="sqeuclidean")
    wa = np.full(a.shape[0], 1.0 / a.shape[0])
    wb = np.full(b.shape[0], 1.0 / b.shape[0])
    return float(np.sqrt(ot.emd2(wa, wb, cost, numItermax=10_000_000)))


def _check_clouds(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = a.detach().cpu().double().flatten(1)
    b = b.detach().cpu().double().flatten(1)
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"point clouds differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise UsageError("cannot compare an empty point cloud")
    return a, b


def _finite(a: torch.Tensor, b: torch.Tensor) -> bool:
    """A diverged model's samples are infinitely far from the data, not an error."""
    return bool(torch.isfinite(a).all() and torch.isfinite(b).all())
