"""Vectors of any dimension from a file: robot actions, embeddings, tabular rows.

A `.npy` holds a float array [N, D]; an `.npz` holds it under `x` (or `arr_0`) and, optionally,
integer class labels [N] under `y`. The model is an MLP, scored with sliced W2 and exact W2 like
the 2-D sets. The rows are used as they are: standardise each column (mean 0, std about 1)
first, as the noise the flow starts from is a unit Gaussian.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from shortcut_models.data.indexed import IndexedData
from shortcut_models.errors import UsageError


def read_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x [N, D] float, y [N] int or None) from an .npy or .npz; anything else is a UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no array file at {path}")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            if isinstance(loaded, np.ndarray):
                return loaded, None
            key = "x" if "x" in loaded else "arr_0" if "arr_0" in loaded else None
            if key is None:
                raise UsageError(f"{path} holds no 'x' (or 'arr_0') array: {list(loaded)}")
            return loaded[key], loaded.get("y")
    except UsageError:
        raise
    except Exception as exc:  # numpy raises ValueError, OSError, BadZipFile ... for bad files
        raise UsageError(f"cannot read {path} as .npy / .npz ({exc})") from None


class ArrayData(IndexedData):
    """Rows of an [N, D] array (optionally labelled) as a training data source."""

    kind = "vector"

    def __init__(self, path: str | Path) -> None:
        x, y = read_arrays(path)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise UsageError(f"{path}: expected an array [N, D] with N >= 2 rows, got {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise UsageError(f"{path}: expected real numbers, got {x.dtype}")
        if not np.isfinite(x).all():
            raise UsageError(f"{path}: the array holds NaN or inf values")
        self.name = f"array:{path}"
        self.vectors = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.shape = (int(x.shape[1]),)
        self.labels, self.num_classes = None, 0
        if y is not None:
            if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
                raise UsageError(
                    f"{path}: 'y' must hold {x.shape[0]} integer labels >= 0, got "
                    f"{y.dtype} {y.shape}"
                )
            self.labels = torch.from_numpy(y.astype(np.int64))
            self.num_classes = int(y.max()) + 1
        std = self.vectors.std(dim=0)
        if bool(((std < 0.05) | (std > 20)).any()):
            print(
                f"warning: {path}: column standard deviations range from {float(std.min()):.3g} "
                f"to {float(std.max()):.3g}; flows train best on standardised columns (std ~1)",
                file=sys.stderr,
            )

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def fetch(self, index: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        return self.vectors[index]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n rows for reference sets: without replacement, or with it when n exceeds the rows."""
        generator = torch.Generator().manual_seed(seed)
        if n <= len(self):
            index = torch.randperm(len(self), generator=generator)[:n]
        else:
            index = torch.randint(0, len(self), (n,), generator=generator)
        return self.vectors[index]
