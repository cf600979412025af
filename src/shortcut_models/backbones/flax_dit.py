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


def _linear(layer: Tree) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(layer["kernel"]).T, np.asarray(layer["bias"])


def dit_options_from_flax(params: Tree, num_heads: int | None = None) -> dict[str, int]:
    """Our DiT's size options for an official parameter tree. Heads are not in the shapes: without
    `num_heads` the options leave them out, for the caller to choose from the hidden size."""
    try:
        kernel = np.asarray(params["PatchEmbed_0"]["Conv_0"]["kernel"])
        depth = sum(1 for name in params if name.startswith("DiTBlock_"))
        mlp = np.asarray(params["DiTBlock_0"]["MlpBlock_0"]["Dense_0"]["kernel"])
        table = np.asarray(params["LabelEmbedder_0"]["Embed_0"]["embedding"])
        patch, _, channels, hidden = kernel.shape
    except KeyError as exc:
        raise UsageError(f"not an official DiT parameter tree: no {exc.args[0]}") from None
    except (TypeError, ValueError, IndexError):
        raise UsageError("not an official DiT parameter tree: its layers are not arrays") from None
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

    def put(name: str, layer: Tree) -> None:
        state[f"{name}.weight"], state[f"{name}.bias"] = _linear(layer)

    conv = params["PatchEmbed_0"]["Conv_0"]
    state["patch.weight"] = np.asarray(conv["kernel"]).transpose(3, 2, 0, 1)
    state["patch.bias"] = np.asarray(conv["bias"])
    for ours, theirs in (
        ("t_embedder", "TimestepEmbedder_0"),
        ("d_embedder", "TimestepEmbedder_1"),
    ):
        put(f"cond.{ours}.mlp.0", params[theirs]["Dense_0"])
        put(f"cond.{ours}.mlp.2", params[theirs]["Dense_1"])
    table = np.asarray(params["LabelEmbedder_0"]["Embed_0"]["embedding"])
    if num_classes > 0:
        if table.shape[0] != num_classes + 1:
            raise UsageError(
                f"the official label table has {table.shape[0]} rows, not {num_classes} classes + 1"
            )
        state["cond.y_embedder.table.weight"] = table
    else:  # every official label is the null class (its last row): a constant, folded in
        state["cond.t_embedder.mlp.2.bias"] = state["cond.t_embedder.mlp.2.bias"] + table[-1]
    depth = sum(1 for name in params if name.startswith("DiTBlock_"))
    for i in range(depth):
        block = params[f"DiTBlock_{i}"]
        put(f"blocks.{i}.ada.1", block["Dense_0"])
        k, q, v = (_linear(block[f"Dense_{j}"]) for j in (1, 2, 3))
        state[f"blocks.{i}.attn.qkv.weight"] = np.concatenate([q[0], k[0], v[0]])
        state[f"blocks.{i}.attn.qkv.bias"] = np.concatenate([q[1], k[1], v[1]])
        put(f"blocks.{i}.attn.proj", block["Dense_4"])
        put(f"blocks.{i}.mlp.0", block["MlpBlock_0"]["Dense_0"])
        put(f"blocks.{i}.mlp.2", block["MlpBlock_0"]["Dense_1"])
    put("ada_out.1", params["FinalLayer_0"]["Dense_0"])
    put("out", params["FinalLayer_0"]["Dense_1"])
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
