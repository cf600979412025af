"""Checkpoints of the official JAX code (kvfrans/shortcut-models) as run folders of ours.

The official `Checkpoint` class writes a plain pickle of `{"train_state": {"params",
"params_ema", "opt_state", "step"}, "_timestamp"}` (plus "config" where a script set one) after
a `process_allgather`, so its leaves are numpy arrays inside flax `FrozenDict`s and optax state
tuples. A pickle can run any code while it loads, so it is read with `OfficialUnpickler`, which
resolves only the handful of names such a file needs, each to an inert stand-in of ours (numpy's
own array reconstruction; `dict` for FrozenDict; a plain tuple for optax states; numpy for a jax
array), and refuses every other name before anything is called. Neither JAX nor flax is imported.

The parameters map to our DiT with `backbones/flax_dit.py`; the run's config is the `reference`
recipe's (the official DiT's attention, time scale and positions), so `sample`, `evaluate`,
`export` and `serve` take the folder like any run of ours.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shortcut_models.errors import UsageError
from shortcut_models.numpy_pickle import NUMPY_NAMES

# the official README's models: hidden size -> heads (DiT-B and DiT-XL; the others of DiT's table)
HEADS_BY_HIDDEN = {384: 6, 768: 12, 1024: 16, 1152: 16}
# DiT-XL/2's train state (params, EMA, Adam's two moments: 4 x 675M float32) is about 11 GB
MAX_BYTES = 32 * 2**30


class _OptaxState(tuple):
    """An optax state (a named tuple in the file) as a plain tuple of its fields."""

    def __new__(cls, *fields: Any) -> _OptaxState:
        return tuple.__new__(cls, fields)


def _frozen_dict(*args: Any, **kwargs: Any) -> dict:
    """flax's FrozenDict pickles as FrozenDict(a_plain_dict)."""
    return dict(*args, **kwargs)


def _jax_array(fun: Any, args: tuple, array_state: Any, aval_state: Any) -> np.ndarray:
    """A jax Array pickles as numpy's reconstruction plus its state; keep the numpy array."""
    value = fun(*args)
    if not isinstance(value, np.ndarray):
        raise pickle.UnpicklingError("a jax array that does not rebuild as a numpy array")
    value.__setstate__(array_state)
    return value


ALLOWED: dict[tuple[str, str], Any] = {
    **NUMPY_NAMES,
    ("collections", "OrderedDict"): dict,
    ("flax.core.frozen_dict", "FrozenDict"): _frozen_dict,
    ("jax._src.array", "_reconstruct_array"): _jax_array,
}  # fmt: skip


class OfficialUnpickler(pickle.Unpickler):
    """Resolves only the names in ALLOWED and optax's `...State` tuples; refuses the rest."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module.startswith("optax.") and name.endswith("State") and name.isidentifier():
            return _OptaxState
        raise UsageError(
            f"the file asks to load {module}.{name}, which an official checkpoint never holds; "
            "refused (a pickle can run code: only numpy arrays and flax / optax containers are "
            "read)"
        )


def _pickle_file(path: Path) -> Path:
    """The file itself, or the pickle inside the folder the official Checkpoint makes when it
    saves to a local path (it creates FILENAME as a folder and moves FILENAME.tmp into it)."""
    inside = path / f"{path.name}.tmp"
    if path.is_dir() and inside.is_file():
        return inside
    return path


def read_pickle(path: Path) -> Any:
    """The object in an official checkpoint file, read with `OfficialUnpickler` straight from
    the file (a DiT-XL train state is about 11 GB: its bytes are not held twice)."""
    path = _pickle_file(path)
    if not path.is_file():
        raise UsageError(f"no file at {path}")
    if path.stat().st_size > MAX_BYTES:
        raise UsageError(f"{path} is larger than any official checkpoint ({MAX_BYTES:,} bytes)")
    with open(path, "rb") as handle:
        if handle.read(1) != b"\x80":
            raise UsageError(f"{path} is not a pickle (an official checkpoint is one)")
        handle.seek(0)
        try:
            return OfficialUnpickler(handle).load()
        except UsageError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
            raise UsageError(f"{path} is truncated or not an official checkpoint ({exc})") from None
        except Exception as exc:  # any other error inside a reconstruction is the file's
            raise UsageError(f"{path} cannot be read as an official checkpoint ({exc!r})") from None


@dataclass
class OfficialCheckpoint:
    """The parts of an official checkpoint a run needs."""

    params: Mapping[str, Any]
    params_ema: Mapping[str, Any] | None
    step: int


# an official tree is 5 levels deep and holds a few thousand arrays (DiT-XL/2: 28 blocks of 9
# layers); the bounds refuse a crafted file before its shape can cost time or recursion
MAX_DEPTH = 16
MAX_NODES = 1_000_000
LEAF_DTYPES = (np.float16, np.float32, np.float64)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_tree(tree: Any, where: str) -> None:
    """Nested dicts of finite float arrays that float32 holds, or a one-line error naming the
    first bad node. Walked without recursion, each node once: a file may share one dict between
    two places (params_ema and params), but a cycle, a tree deeper than MAX_DEPTH or one of more
    than MAX_NODES nodes is refused (a 714-byte pickle of 40 levels sharing one dict twice has
    2^40 paths)."""
    checked: set[int] = set()
    stack: list[tuple[Any, str, tuple[int, ...]]] = [(tree, where, ())]
    while stack:
        node, name, above = stack.pop()
        if id(node) in above:
            raise UsageError(f"{name} contains itself: not an official checkpoint")
        if id(node) in checked:
            continue  # shared, and checked where it was first met
        checked.add(id(node))
        if len(checked) > MAX_NODES:
            raise UsageError(f"{where} has more than {MAX_NODES:,} entries: not an official tree")
        if isinstance(node, Mapping):
            if len(above) >= MAX_DEPTH:
                raise UsageError(f"{where} nests deeper than {MAX_DEPTH} levels at {name}")
            for key, value in node.items():
                if not isinstance(key, str):
                    raise UsageError(f"{name}: a parameter name that is not text ({key!r})")
                stack.append((value, f"{name}/{key}", (*above, id(node))))
        elif not isinstance(node, np.ndarray) or node.dtype.type not in LEAF_DTYPES:
            kind = f"a {node.dtype} array" if isinstance(node, np.ndarray) else type(node).__name__
            raise UsageError(f"{name} is {kind}, not an array of float16, float32 or float64")
        elif not np.isfinite(node).all():
            raise UsageError(f"{name} holds NaN or inf")
        elif node.size and float(np.abs(node).max()) > FLOAT32_MAX:
            raise UsageError(f"{name} holds values beyond float32's range")


def _step(value: Any, path: Path) -> int:
    """train_state.step as a count: a whole number in [0, 2^63)."""
    try:
        number = np.asarray(value)
        if number.shape != () or number.dtype.kind not in "iuf":
            raise TypeError
        step = float(number) if number.dtype.kind == "f" else int(number)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{path}: train_state.step is not a number ({value!r})") from None
    if not (0 <= step < 2**63 and float(step).is_integer()):
        raise UsageError(f"{path}: train_state.step is {value!r}, not a step count")
    return int(step)


def read_official(path: str | Path) -> OfficialCheckpoint:
    """Parameters, EMA parameters and step of an official checkpoint file."""
    path = Path(path)
    found = read_pickle(path)
    state = found.get("train_state") if isinstance(found, Mapping) else None
    if not isinstance(state, Mapping) or not isinstance(state.get("params"), Mapping):
        raise UsageError(f"{path} has no train_state.params: not an official checkpoint")
    params, ema = state["params"], state.get("params_ema")
    _check_tree(params, "params")
    if ema is not None:
        _check_tree(ema, "params_ema")
    return OfficialCheckpoint(params, ema, _step(state.get("step", 0), path))


WEIGHTS = ("raw", "ema")  # raw first: the official evaluation's use_ema 0


def import_official(
    path: str | Path,
    out: str | Path,
    *,
    weights: str = "raw",
    num_heads: int | None = None,
    input_size: int | None = None,
    vae: str | None = None,
    denoise_timesteps: int = 128,
) -> Path:
    """Write run folder `out` from official checkpoint `path`: both weight sets (params as the
    raw weights, params_ema as the EMA), sampled with `weights`; returns the checkpoint path.

    The file holds neither the head count nor the image size: heads come from the hidden size
    (DiT-S/B/L/XL) unless `num_heads` is given; the input side is 32 for 4-channel latents (256 px
    through the SD VAE, every released model) unless `input_size` is given."""

    from shortcut_models.backbones.flax_dit import dit_options_from_flax, dit_state_from_flax
    from shortcut_models.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from shortcut_models.compose import compose_config
    from shortcut_models.data import DataSpec
    from shortcut_models.factory import build_model_for, build_objective_for
    from shortcut_models.locking import FolderLock

    out = Path(out)
    if (out / CHECKPOINT_NAME).exists():
        raise UsageError(f"{out} already holds a run; import into a new folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; import into a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} is a folder that is not empty; import into a new folder")
    if weights not in WEIGHTS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    found = read_official(path)
    if weights == "ema" and found.params_ema is None:
        raise UsageError(f"{path} holds no params_ema: import it with --weights raw")
    sizes = dit_options_from_flax(found.params)
    hidden = sizes["hidden_size"]
    if num_heads is None:
        if hidden not in HEADS_BY_HIDDEN:
            raise UsageError(
                f"hidden size {hidden} is not one of the DiT presets "
                f"({', '.join(map(str, HEADS_BY_HIDDEN))}): give its head count with --num-heads"
            )
        num_heads = HEADS_BY_HIDDEN[hidden]
    if hidden % num_heads:
        raise UsageError(f"--num-heads {num_heads} does not divide the hidden size {hidden}")
    sizes["num_heads"] = num_heads
    channels, classes = sizes.pop("in_channels"), sizes.pop("num_classes")
    if input_size is None:
        if channels != 4:
            raise UsageError(
                f"a {channels}-channel model: give the side of its inputs with --input-size"
            )
        input_size = 32
    latent = channels == 4
    spec = DataSpec(
        name=f"official:{Path(path).name}",
        kind="latent" if latent else "image",
        shape=(channels, input_size, input_size),
        num_classes=classes,
        vae=vae if latent else None,
    )
    composed = compose_config(
        None,
        recipe_name="reference",
        flags={
            "data": {"name": "latents" if latent else "folder"},
            "objective": {"name": "shortcut", "options": {"denoise_timesteps": denoise_timesteps}},
            "backbone": {"name": "dit", "options": sizes},
            "training": {"eval_weights": "model" if weights == "raw" else "ema"},
        },
    )
    config = composed.config
    model = build_model_for(config, spec, build_objective_for(config, spec))
    states = {}
    for name, tree in (("model", found.params), ("ema", found.params_ema or found.params)):
        state = dit_state_from_flax(tree, classes)
        try:
            model.load_state_dict(state)  # strict: every name and shape our DiT has
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UsageError(f"{path}: its {name} parameters do not fit a DiT ({first})") from None
        states[name] = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused import leaves nothing
    with FolderLock(out, "shortcut import-official"):
        return save_checkpoint(
            out,
            config=config,
            step=found.step,
            parts={"model": states["model"], "ema": states["ema"]},
            data=spec,
            extra={"imported_from": str(Path(path).resolve())},
        )
