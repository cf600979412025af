"""Image data held in memory as uint8, served as [-1, 1] float batches.

Batch k is a pure function of (seed, k): epoch e = k // batches_per_epoch is a permutation drawn
from (seed, e), so resuming needs no loader state. Horizontal flips, when on, come from (seed, k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shortcut_models.errors import UsageError
from shortcut_models.seeding import DATA, derive_seed, step_generator


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clipped."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ImageData:
    """A labelled (or unlabelled) set of uint8 images (N, C, H, W)."""

    kind = "image"

    def __init__(
        self,
        name: str,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        num_classes: int,
        pad_to: int | None = None,
        flip: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise UsageError(f"{name}: expected uint8 images (N, C, H, W), got {images.shape}")
        if images.shape[0] == 0:
            raise UsageError(f"{name}: no images")
        self.name = name
        self.images = images
        self.labels = labels
        self.num_classes = num_classes if labels is not None else 0
        self.flip = flip
        _, channels, height, width = images.shape
        self.pad = 0 if pad_to is None else (pad_to - max(height, width)) // 2
        self.shape = (channels, height + 2 * self.pad, width + 2 * self.pad)
        self._epoch: tuple[int, int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = to_unit_range(images)
        return F.pad(x, (self.pad,) * 4, value=-1.0) if self.pad else x

    def _permutation(self, seed: int, epoch: int) -> torch.Tensor:
        if self._epoch is None or self._epoch[:2] != (seed, epoch):
            generator = torch.Generator().manual_seed(derive_seed(seed, epoch, DATA))
            self._epoch = (seed, epoch, torch.randperm(len(self), generator=generator))
        return self._epoch[2]

    def batch(
        self, step: int, batch_size: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        per_epoch = len(self) // batch_size
        if per_epoch == 0:
            raise UsageError(f"batch size {batch_size} is larger than {self.name} ({len(self)})")
        order = self._permutation(seed, step // per_epoch)
        start = (step % per_epoch) * batch_size
        index = order[start : start + batch_size]
        x = self.prepare(self.images[index])
        if self.flip:
            flips = torch.rand(batch_size, generator=step_generator(seed, step, DATA)) < 0.5
            x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        return x, None if self.labels is None else self.labels[index]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n images drawn without replacement (as uint8, padded), for reference sets."""
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return to_uint8(self.prepare(self.images[index]))
