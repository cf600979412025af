"""Parameters of the official JAX/flax DiT (kvfrans/shortcut-models, model.py) as our DiT's.

The official parameter tree names layers by creation order: `PatchEmbed_0/Conv_0`,
`TimestepEmbedder_0` (t) and `_1` (the step level), `LabelEmbedder_0/Embed_0`, per block
`DiTBlock_i/Dense_0` (adaLN, 6H), `Dense_1..3` (k, q, v: created in that order), `Dense_4`
(attention output) and `MlpBlock_0/Dense_0..1`, then `FinalLayer_0/Dense_0` (adaLN, 2H) and
`Dense_1` (output); `Embed_0` (a log-variance table the official forward does not use) is left.
Flax kernels are [in, out] (convolutions [kh, kw, in, out], NHWC); torch weights are [out, in].

The converted network computes what the official one does only under the reference's DiT
options (`REFERENCE_DIT` in recipes.py: unscaled t, 1/d_head attention, (col, row) positions;
the initialisation options do not matter once weights are loaded). An official model without
classes (its `num_classes` 1, every label the null class 1) becomes our unconditional DiT: the
constant null-label embedding is folded into the last bias of the time embedder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shortcut_models.errors import UsageError

Tree = Mapping[str, Any]


NOT_OFFICIAL = "not an official DiT parameter tree"
BLOCK = "DiTBlock_"


def _at(tree: Tree, *names: str) -> Any:
    """tree[a][b]..., or a one-line UsageError naming the first missing part of the path."""
    node: Any = tree
    for i, name in enumerate(names):
        if not isinstance(node, Mapping) or name not in node:
            raise UsageError(f"{NOT_OFFICIAL}: no {'/'.join(names[: i + 1])}")
        node = node[name]
    return node


def _array(tree: Tree, *names: str, ndim: int) -> np.ndarray:
    value = _at(tree, *names)
    if not isinstance(value, np.ndarray) or value.ndim != ndim:
        got = f"shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise UsageError(f"{NOT_OFFICIAL}: {'/'.join(names)} is not a {ndim}-D array ({got})")
    return value


def _linear(tree: Tree, *names: str) -> tuple[np.ndarray, np.ndarray]:
    """A flax Dense layer's (weight [out, in], bias [out]), its kernel and bias checked."""
    kernel = _array(tree, *names, "kernel", ndim=2)
    bias = _array(tree, *names, "bias", ndim=1)
    if bias.shape[0] != kernel.shape[1]:
        raise UsageError(
            f"{NOT_OFFICIAL}: {'/'.join(names)} has {kernel.shape[1]} outputs but "
            f"{bias.shape[0]} biases"
        )
    return kernel.T, bias


def block_count(params: Tree) -> int:
    """How many DiTBlock_i the tree holds, numbered 0..n-1 without a gap (else a UsageError)."""
    numbers = []
    for name in params:
        if name.startswith(BLOCK):
            suffix = name[len(BLOCK) :]
            if not (suffix.isdecimal() and suffix.isascii() and str(int(suffix)) == suffix):
                raise UsageError(f"{NOT_OFFICIAL}: a block named {name!r}")
            numbers.append(int(suffix))
    if sorted(numbers) != list(range(len(numbers))):
        missing = min(set(range(max(numbers) + 1)) - set(numbers))
        raise UsageError(f"{NOT_OFFICIAL}: no {BLOCK}{missing} (the blocks are numbered 0..n-1)")
    return len(numbers)


def dit_options_from_flax(params: Tree, num_heads: int | None = None) -> dict[str, int]:
    """Our DiT's size options for an official parameter tree, every layer the conversion reads
    checked first (present, an array of the right rank), so that a damaged or foreign tree is one
    line rather than a traceback. Heads are not in the shapes: without `num_heads` the options
    leave them out, for the caller to choose from the hidden size."""
    kernel = _array(params, "PatchEmbed_0", "Conv_0", "kernel", ndim=4)
    _array(params, "PatchEmbed_0", "Conv_0", "bias", ndim=1)
    patch, _, channels, hidden = kernel.shape
    if min(kernel.shape) < 1:
        raise UsageError(f"{NOT_OFFICIAL}: a patch embedding of shape {kernel.shape}")
    depth = block_count(params)
    if depth < 1:
        raise UsageError(f"{NOT_OFFICIAL}: no {BLOCK}0")
    for embedder in ("TimestepEmbedder_0", "TimestepEmbedder_1"):
        for dense in ("Dense_0", "Dense_1"):
            _linear(params, embedder, dense)
    table = _array(params, "LabelEmbedder_0", "Embed_0", "embedding", ndim=2)
    for i in range(depth):
        for dense in ("Dense_0", "Dense_1", "Dense_2", "Dense_3", "Dense_4"):
            _linear(params, f"{BLOCK}{i}", dense)
        for dense in ("Dense_0", "Dense_1"):
            _linear(params, f"{BLOCK}{i}", "MlpBlock_0", dense)
    for dense in ("Dense_0", "Dense_1"):
        _linear(params, "FinalLayer_0", dense)
    mlp = _array(params, f"{BLOCK}0", "MlpBlock_0", "Dense_0", "kernel", ndim=2)
    options = {
        "patch_size": int(patch),
        "in_channels": int(channels),
        "hidden_size": int(hidden),
        "depth": depth,
        "mlp_ratio": mlp.shape[1] / hidden,
        "num_classes": table.shape[0] - 1 if table.shape[0] > 2 else 0,
    }
    if num_heads is not None:
        options["num_heads"] = num_heads
    return options


def dit_state_from_flax(params: Tree, num_classes: int) -> dict[str, torch.Tensor]:
    """Our DiT's state dict from the official tree. `num_classes` is ours: 0 for an official
    model trained without classes (labels all null), else the official num_classes."""
    state: dict[str, np.ndarray] = {}

    def put(name: str, *theirs: str) -> None:
        state[f"{name}.weight"], state[f"{name}.bias"] = _linear(params, *theirs)

    state["patch.weight"] = _array(params, "PatchEmbed_0", "Conv_0", "kernel", ndim=4).transpose(
        3, 2, 0, 1
    )
    state["patch.bias"] = _array(params, "PatchEmbed_0", "Conv_0", "bias", ndim=1)
    for ours, theirs in (
        ("t_embedder", "TimestepEmbedder_0"),
        ("d_embedder", "TimestepEmbedder_1"),
    ):
        put(f"cond.{ours}.mlp.0", theirs, "Dense_0")
        put(f"cond.{ours}.mlp.2", theirs, "Dense_1")
    table = _array(params, "LabelEmbedder_0", "Embed_0", "embedding", ndim=2)
    if num_classes > 0:
        if table.shape[0] != num_classes + 1:
            raise UsageError(
                f"the official label table has {table.shape[0]} rows, not {num_classes} classes + 1"
            )
        state["cond.y_embedder.table.weight"] = table
    else:  # every official label is the null class (its last row): a constant, folded in
        state["cond.t_embedder.mlp.2.bias"] = state["cond.t_embedder.mlp.2.bias"] + table[-1]
    for i in range(block_count(params)):
        block = f"{BLOCK}{i}"
        put(f"blocks.{i}.ada.1", block, "Dense_0")
        k, q, v = (_linear(params, block, f"Dense_{j}") for j in (1, 2, 3))
        if not q[0].shape == k[0].shape == v[0].shape:
            raise UsageError(f"{NOT_OFFICIAL}: {block}'s query, key and value differ in shape")
        state[f"blocks.{i}.attn.qkv.weight"] = np.concatenate([q[0], k[0], v[0]])
        state[f"blocks.{i}.attn.qkv.bias"] = np.concatenate([q[1], k[1], v[1]])
        put(f"blocks.{i}.attn.proj", block, "Dense_4")
        put(f"blocks.{i}.mlp.0", block, "MlpBlock_0", "Dense_0")
        put(f"blocks.{i}.mlp.2", block, "MlpBlock_0", "Dense_1")
    put("ada_out.1", "FinalLayer_0", "Dense_0")
    put("out", "FinalLayer_0", "Dense_1")
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
