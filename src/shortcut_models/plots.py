"""Figures: scatter panels for 2-D samples."""

from __future__ import annotations

from pathlib import Path

import torch

from shortcut_models.checkpoint import atomic_write


def scatter_panels(panels: dict[str, torch.Tensor], path: Path, limit: float = 3.0) -> None:
    """One scatter plot per named 2-D point cloud, side by side, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels.items(), strict=True):
        pts = points.detach().cpu().float().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
        ax.set_title(title)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
