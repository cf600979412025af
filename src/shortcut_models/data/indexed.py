"""The batching every finite data set shares: a stateless epoch permutation.

Batch k is a pure function of (seed, k): epoch e = k // batches_per_epoch is a permutation drawn
from (seed, e), so resuming needs no loader state. Horizontal flips, when on, come from (seed, k).
A process of a distributed job reads only its rows of the global batch.
"""

from __future__ import annotations

import torch

from shortcut_models.data.source import Source
from shortcut_models.errors import UsageError
from shortcut_models.seeding import DATA, derive_seed, step_generator


class IndexedData(Source):
    """Base of the finite sets: subclasses give `__len__` and `fetch(index, flips)`."""

    name: str
    labels: torch.Tensor | None
    flip: bool = False
    _epoch: tuple[int, int, torch.Tensor] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def fetch(self, index: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        """Float training inputs for rows `index`, mirrored where `flips` is true."""
        raise NotImplementedError

    def _permutation(self, seed: int, epoch: int) -> torch.Tensor:
        if self._epoch is None or self._epoch[:2] != (seed, epoch):
            generator = torch.Generator().manual_seed(derive_seed(seed, epoch, DATA))
            self._epoch = (seed, epoch, torch.randperm(len(self), generator=generator))
        return self._epoch[2]

    def batch(
        self, step: int, batch_size: int, seed: int, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global batch number `step`, or only its `rows` (what one rank of several reads)."""
        per_epoch = len(self) // batch_size
        if per_epoch == 0:
            raise UsageError(f"batch size {batch_size} is larger than {self.name} ({len(self)})")
        order = self._permutation(seed, step // per_epoch)
        start = (step % per_epoch) * batch_size
        index = order[start : start + batch_size]
        flips = None
        if self.flip:
            flips = torch.rand(batch_size, generator=step_generator(seed, step, DATA)) < 0.5
        if rows is not None:
            index, flips = index[rows], None if flips is None else flips[rows]
        return self.fetch(index, flips), None if self.labels is None else self.labels[index]
