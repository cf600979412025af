"""Multi-level Haar wavelet loss (the iSM option against the low-frequency bias of pixel MSE).

We use the averaging Haar transform (each coefficient is a 2x2 mean or half-difference), under
which the mean squared coefficient of every band is exactly that band's share of the pixel MSE:
the bands of L levels (3 detail bands per level plus the last low-pass band) partition the MSE.
The loss sums each band's root-mean-square error instead of its mean square, so a band counts by
its relative error rather than its energy: the gradient of band b scales as 1 / RMS_b, which gives
the fine-detail bands (small errors, most of the pixels' count but little of the MSE) far more
weight than plain MSE does. (iSM's code is not released; this weighting is our reading of its
multi-level wavelet loss, stated here so it can be checked and changed.)
"""

from __future__ import annotations

import torch

from shortcut_models.errors import UsageError

EPS = 1e-8  # keeps the square root differentiable at a zero band error


def haar_step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One level of the averaging 2-D Haar transform of (N, C, H, W): (low, horizontal detail,
    vertical detail, diagonal detail), each (N, C, H/2, W/2)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 4, (a - b + c - d) / 4, (a + b - c - d) / 4, (a - b - c + d) / 4


def haar_bands(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The 3 * levels detail bands (finest first) and the final low-pass band."""
    check_wavelet_shape(x.shape, levels)
    bands = []
    low = x
    for _ in range(levels):
        low, *details = haar_step(low)
        bands.extend(details)
    return [*bands, low]


def wavelet_loss(error: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-sample sum over bands of the band's RMS, for error = prediction - target (the Haar
    transform is linear, so transforming the error equals differencing the transforms)."""
    bands = haar_bands(error.float(), levels)
    return sum(torch.sqrt(band.pow(2).flatten(1).mean(1) + EPS) for band in bands)


def check_wavelet_shape(shape: torch.Size | tuple[int, ...], levels: int) -> None:
    """Images (N, C, H, W) with H and W divisible by 2^levels; anything else is a UsageError."""
    if len(shape) != 4:
        raise UsageError(
            f"the wavelet loss needs image batches (N, C, H, W), got shape {tuple(shape)}"
        )
    size = 2**levels
    if shape[-1] % size or shape[-2] % size:
        raise UsageError(
            f"{levels} wavelet levels need height and width divisible by {size}, "
            f"got {shape[-2]}x{shape[-1]}"
        )


def auto_levels(shape: torch.Size | tuple[int, ...], most: int = 3) -> int:
    """The most levels (up to `most`) that an image shape allows; 0 for non-images."""
    if len(shape) != 4:
        return 0
    levels = 0
    while (
        levels < most and shape[-1] % 2 ** (levels + 1) == 0 and shape[-2] % 2 ** (levels + 1) == 0
    ):
        levels += 1
    return levels
