"""Writing images: sample grids and per-sample PNG files (Pillow), uint8 .npz for FID tools."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from shortcut_models.files import atomic_write

# Grids show small images enlarged to about this many pixels a tile (exact arrays go to .npz).
GRID_TILE = 96


def grid(
    images: torch.Tensor, ncol: int | None = None, pad: int = 2, scale: int | None = None
) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W', C) mosaic with `pad` pixels of white between.
    Every tile is enlarged `scale` times by pixel repetition (nearest neighbour; default: to about
    GRID_TILE pixels, so 32 px digits can be judged on a screen)."""
    scale = max(1, GRID_TILE // images.shape[-2]) if scale is None else scale
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    hwc = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        canvas[top : top + h, left : left + w] = hwc[i]
    return canvas


def save_png(array: np.ndarray, path: Path) -> None:
    """Save an (H, W, C) uint8 array as PNG, atomically."""
    from PIL import Image

    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def save_npz(images: torch.Tensor, path: Path) -> None:
    """uint8 (N, H, W, C) under key arr_0: the layout FID tools (e.g. ADM's evaluator) read."""
    array = images.permute(0, 2, 3, 1).cpu().numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, arr_0=array)

    atomic_write(Path(path), write)


def save_grid(images: torch.Tensor, path: Path, ncol: int = 10) -> None:
    """uint8 (N, C, H, W) images as one PNG mosaic, `ncol` per row."""
    save_png(grid(images, ncol=ncol), path)
