"""Image data held in memory as uint8, served as [-1, 1] float batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from shortcut_models.data.indexed import IndexedData
from shortcut_models.errors import UsageError


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clipped."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ImageData(IndexedData):
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
        class_names: list[str] | None = None,
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
        self.class_names = list(class_names or [])
        _, channels, height, width = images.shape
        self.pad = 0 if pad_to is None else (pad_to - max(height, width)) // 2
        self.shape = (channels, height + 2 * self.pad, width + 2 * self.pad)

    def __len__(self) -> int:
        return self.images.shape[0]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = to_unit_range(images)
        return F.pad(x, (self.pad,) * 4, value=-1.0) if self.pad else x

    def fetch(self, index: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        x = self.prepare(self.images[index])
        return x if flips is None else torch.where(flips[:, None, None, None], x.flip(-1), x)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n images drawn without replacement (as uint8, padded), for reference sets."""
        return torch.cat(list(self.sample_batches(n, seed, len(self))))

    def sample_batches(self, n: int, seed: int, batch: int) -> Iterator[torch.Tensor]:
        """The images of `sample(n, seed)`, `batch` at a time: memory for one batch, not n."""
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        for start in range(0, len(index), batch):
            yield to_uint8(self.prepare(self.images[index[start : start + batch]]))
