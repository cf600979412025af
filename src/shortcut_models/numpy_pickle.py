"""Reading pickles that hold only numpy arrays, without letting them run code.

A pickle names the functions that rebuild its objects, and `pickle.load` calls whatever it names:
a file anyone could change (a cache, a download, a user's checkpoint) could run any code. The
`NumpyUnpickler` resolves only numpy's own array, scalar and dtype rebuilders and refuses every
other name with one line; callers that need more (the official code's flax / optax containers)
extend `NUMPY_NAMES`.
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO

import numpy as np

from shortcut_models.errors import UsageError

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own, whatever its module path
_SCALAR = np.float32(0).__reduce__()[0]
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1 and 2 names
NUMPY_NAMES: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _RECONSTRUCT for m in _MULTIARRAY},
    **{(m, "scalar"): _SCALAR for m in _MULTIARRAY},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyUnpickler(pickle.Unpickler):
    """Resolves only the names in `allowed` (default NUMPY_NAMES); any other is a UsageError
    naming the file's `what`."""

    def __init__(
        self,
        handle: BinaryIO,
        what: str,
        allowed: dict[tuple[str, str], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handle, **kwargs)
        self.what, self.allowed = what, NUMPY_NAMES if allowed is None else allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise UsageError(
            f"{self.what} asks to load {module}.{name}; refused (a pickle can run code: only "
            "numpy arrays are read)"
        )
