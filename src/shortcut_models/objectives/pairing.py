"""Minibatch optimal-transport pairing of noise and data (iSM's sOT option).

Straight-line training draws noise x0 and data x1 independently, so paths cross and the field to
learn curves. Re-pairing the noise of a batch by the exact assignment that minimises the summed
squared distance ||x0 - x1||^2 keeps both marginals (the noise is only permuted) while making the
pairs, and hence the paths, closer to the optimal coupling. The quality of the coupling grows
with the number of rows solved together, which in high dimension must be large; iSM's "scaling"
solves it over large batches. Here the problem spans `group` rows (0: the whole batch the
objective sees on this process, i.e. the global batch / processes / gradient accumulation).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def ot_permutation(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """perm such that sum_i ||x0[perm[i]] - x1[i]||^2 is minimal (exact, deterministic)."""
    a = x0.detach().flatten(1).to("cpu", torch.float64)
    b = x1.detach().flatten(1).to("cpu", torch.float64)
    cost = torch.cdist(b, a).pow(2).numpy()  # rows: data, columns: noise
    rows, cols = linear_sum_assignment(cost)
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return perm.to(x0.device)


def ot_pair(x0: torch.Tensor, x1: torch.Tensor, group: int = 0) -> torch.Tensor:
    """x0 reordered within consecutive groups of `group` rows (0: all rows) to pair with x1."""
    n = x0.shape[0]
    size = n if group <= 0 else group
    parts = []
    for start in range(0, n, size):
        rows = slice(start, min(n, start + size))
        parts.append(x0[rows][ot_permutation(x0[rows], x1[rows])])
    return torch.cat(parts)
