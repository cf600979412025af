"""Batches for the loop: batch k is a pure function of (seed, k), so a resumed run reads what
an uninterrupted one would; on a GPU, worker processes read ahead into pinned memory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import torch

from shortcut_models.data import DataSource


class _StepBatches(torch.utils.data.Dataset):
    """Item k: this process's rows of global batch k (what the data-loading workers produce)."""

    def __init__(self, data: DataSource, batch_size: int, seed: int, rows: slice) -> None:
        self.data, self.batch_size, self.seed, self.rows = data, batch_size, seed, rows

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.data.batch(step, self.batch_size, self.seed, self.rows)


def step_batches(
    data: DataSource,
    batch_size: int,
    seed: int,
    rows: slice,
    start: int,
    device: torch.device,
    workers: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Rows `rows` of batches start, start + 1, ... (workers None: 4 on a GPU, 0 on a CPU)."""
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    loader = torch.utils.data.DataLoader(
        _StepBatches(data, batch_size, seed, rows),
        batch_size=None,
        sampler=range(start, sys.maxsize),  # the loop stops at config.training.steps
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)
