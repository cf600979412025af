"""Figures: scatter panels for 2-D samples."""

from __future__ import annotations

from pathlib import Path

import torch

from shortcut_models.files import atomic_write


def scatter_panels(panels: dict[str, torch.Tensor], path: Path, limit: float = 3.0) -> None:
    """One scatter plot per named point cloud, side by side, saved as PNG: the first two
    coordinates of each point (a histogram for 1-D points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels.items(), strict=True):
        pts = points.detach().cpu().float().numpy()
        ax.set_title(title)
        ax.set_xlim(-limit, limit)
        if pts.shape[1] == 1:
            ax.hist(pts[:, 0], bins=60, range=(-limit, limit))
        else:
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
            ax.set_ylim(-limit, limit)
            ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def metric_vs_steps(
    curves: dict[str, dict[int, float]], metric: str, path: Path, title: str = ""
) -> None:
    """One line per model: `metric` against the number of sampling steps, log-2 x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, values in curves.items():
        steps = sorted(values)
        ax.plot(steps, [values[n] for n in steps], marker="o", label=label)
    ax.set_xscale("log", base=2)
    all_steps = sorted({n for values in curves.values() for n in values})
    ax.set_xticks(all_steps, [str(n) for n in all_steps])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
