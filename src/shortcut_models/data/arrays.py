"""Vectors of any dimension from a file: robot actions, embeddings, tabular rows.

A `.npy` holds a float array [N, D]; an `.npz` holds it under `x` (or `arr_0`) and, optionally,
integer class labels [N] under `y`. The model is an MLP, scored with sliced W2 and exact W2 like
the 2-D sets. The rows are used as they are: standardise each column (mean 0, std about 1)
first, as the noise the flow starts from is a unit Gaussian.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shortcut_models import logs
from shortcut_models.data.indexed import IndexedData
from shortcut_models.errors import UsageError

log = logs.get(__name__)
MAX_CLASSES = 1000  # labels of an array file lie in [0, MAX_CLASSES): one class embedding each
MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}


def read_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x [N, D] float, y [N] int or None) from an .npy or .npz; anything else is a UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no array file at {path}")
    with open(path, "rb") as handle:
        head = handle.read(6)
    kind = next((suffix for suffix, magic in MAGIC.items() if head.startswith(magic)), None)
    if kind is None:
        expected = path.suffix if path.suffix in MAGIC else ".npy or .npz"
        raise UsageError(
            f"{path} is not an {expected} file (it does not begin as NumPy writes "
            "one; a text or CSV file needs numpy.loadtxt, then numpy.save)"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # an .npy
            return loaded, None
        with loaded:
            key = "x" if "x" in loaded else "arr_0" if "arr_0" in loaded else None
            if key is None:
                raise UsageError(f"{path} holds no 'x' (or 'arr_0') array: {list(loaded)}")
            return loaded[key], loaded.get("y")
    except UsageError:
        raise
    except Exception as exc:  # numpy raises ValueError, OSError, BadZipFile ... for bad files
        if "pickle" in str(exc):  # object arrays: never loaded, and never advised to be
            raise UsageError(f"{path} holds Python objects; only numeric arrays are read") from None
        raise UsageError(f"cannot read {path} as .npy / .npz ({exc})") from None


class VectorData(IndexedData):
    """In-memory vectors [N, D] (optionally labelled [N]) as a training data source: what the
    `array` source reads from a file, and the quickest way to register vectors made in Python."""

    kind = "vector"

    def __init__(
        self,
        name: str,
        vectors: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        x = np.asarray(vectors)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise UsageError(f"{name}: expected an array [N, D] with N >= 2 rows, got {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise UsageError(f"{name}: expected real numbers, got {x.dtype}")
        if not np.isfinite(x).all():
            raise UsageError(f"{name}: the array holds NaN or inf values")
        with np.errstate(over="ignore"):  # the overflow is reported below, in one line
            x32 = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x32).all():  # finite in float64, infinite once trained in float32
            raise UsageError(
                f"{name}: values beyond float32's range (largest magnitude "
                f"{float(np.abs(x).max()):.3g}, float32 ends at 3.4e38); rescale the columns"
            )
        self.name = name
        self.vectors = torch.from_numpy(x32)
        self.shape = (int(x.shape[1]),)
        self.labels, self.num_classes = None, 0
        if labels is not None:
            y = np.asarray(labels)
            if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
                raise UsageError(
                    f"{name}: 'y' must hold {x.shape[0]} integer labels >= 0, got "
                    f"{y.dtype} {y.shape}"
                )
            largest = int(y.max())  # a Python int: uint64 labels beyond int64 included
            if largest >= MAX_CLASSES:
                found = len(np.unique(y))
                raise UsageError(
                    f"{name}: labels must lie in [0, {MAX_CLASSES}) (one class embedding each); "
                    f"found {found} distinct labels, largest {largest}"
                )
            self.labels = torch.from_numpy(y.astype(np.int64))
            self.num_classes = largest + 1
        std = self.vectors.std(dim=0)
        if bool(((std < 0.05) | (std > 20)).any()):
            log.warning(
                f"warning: {name}: column standard deviations range from {float(std.min()):.3g} "
                f"to {float(std.max()):.3g}; flows train best on standardised columns (std ~1)"
            )

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def fetch(self, index: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        return self.vectors[index]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n rows for reference sets: without replacement, or with it when n exceeds the rows."""
        return self.labelled_sample(n, seed)[0]

    def labelled_sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`sample` with the rows' labels, so a conditional model is scored on the same mix of
        classes as the reference."""
        generator = torch.Generator().manual_seed(seed)
        if n <= len(self):
            index = torch.randperm(len(self), generator=generator)[:n]
        else:
            index = torch.randint(0, len(self), (n,), generator=generator)
        return self.vectors[index], None if self.labels is None else self.labels[index]


def array_data(path: str | Path) -> VectorData:
    """The `array` source: the vectors (and labels) of an .npy or .npz file."""
    x, y = read_arrays(path)
    return VectorData(f"array:{path}", x, y)
