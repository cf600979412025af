"""Improved precision and recall (Kynkäänniemi et al., 2019) on feature vectors.

Each set is a union of balls, one per point, reaching to its k-th nearest neighbour in the same
set. Precision: the share of generated points inside the real manifold (fidelity). Recall: the
share of real points inside the generated manifold (coverage of the data).
"""

from __future__ import annotations

import numpy as np
import torch


def _kth_radii(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(points), chunk):
        distances = torch.cdist(points[start : start + chunk], points)
        # the k+1-th smallest, since each point is its own nearest neighbour at distance 0
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int):
    hits = []
    for start in range(0, len(queries), chunk):
        distances = torch.cdist(queries[start : start + chunk], centres)
        hits.append((distances <= radii[None]).any(dim=1))
    return torch.cat(hits)


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024
) -> dict[str, float]:
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    k = min(k, len(real_t) - 1, len(fake_t) - 1)
    if k < 1:
        return {"precision": float("nan"), "recall": float("nan")}
    real_radii, fake_radii = _kth_radii(real_t, k, chunk), _kth_radii(fake_t, k, chunk)
    precision = _inside(fake_t, real_t, real_radii, chunk).double().mean().item()
    recall = _inside(real_t, fake_t, fake_radii, chunk).double().mean().item()
    return {"precision": precision, "recall": recall}
